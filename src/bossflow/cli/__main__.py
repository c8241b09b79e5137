"""``python -m bossflow.cli`` (and ``torchrun -m bossflow.cli``) is ``bossflow``."""

import sys

from .app import main

sys.exit(main())
