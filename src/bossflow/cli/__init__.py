"""The command line: ``bossflow CMD ...``, one module per command.

Only this package parses arguments, prints tables and chooses exit codes; it calls the
library with plain arguments and turns a :class:`~bossflow.BossflowError` into one line
``bossflow: error: ...`` and exit status 2. Importing it (and ``--help``) imports no torch.
"""

from .app import main

__all__ = ["main"]
