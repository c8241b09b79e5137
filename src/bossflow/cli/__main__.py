"""``python -m bossflow.cli`` (and ``torchrun -m bossflow.cli``) is ``bossflow``."""

import os
import sys

from .app import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1") or "1") > 1:
    # Under torchrun, leave without interpreter finalisation: gloo's threads can abort the
    # process in C++ static destructors ("terminate called without an active exception")
    # after the work is done and the process group destroyed, turning a success into SIGABRT.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
