"""Errors raised for bad user input.

Every error a user can cause (a bad file, shape, schedule or option) is a
:class:`BossflowError` whose message is one sentence saying what was wrong and
what to do. The CLI prints it on one line and exits with status 2.
"""


class BossflowError(Exception):
    """Base class of every error caused by user input."""


class ScheduleError(BossflowError):
    """A schedule (list of times) is malformed or cannot be used as asked."""


class CostMatrixError(BossflowError):
    """A cost matrix is malformed, or a step budget is impossible for it."""


class ModelSpecError(BossflowError):
    """A model specification cannot be resolved into a velocity model."""


class FileFormatError(BossflowError):
    """A file is missing, unreadable, or not in the expected bossflow format."""
