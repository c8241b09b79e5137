"""The names that options choose among, spelled here so that ``--help`` imports no torch.

Each tuple mirrors a table of the library; ``tests/test_architecture.py`` fails when they
drift apart.
"""

SEARCH_METHODS = ("uniform", "edm", "shift", "bellman", "global-dp", "gits", "ays", "evolution", "olss", "refined", "auto")
"""``bossflow.search.SEARCHES``."""

SCHEDULE_FAMILIES = ("uniform", "edm", "shift")
"""``bossflow.core.schedules.SCHEDULE_FAMILIES``."""

_STEP_TIMES_ONLY = ("uniform", "edm", "shift", "bellman", "global-dp", "gits", "ays", "evolution", "auto")
METHOD_FAMILIES = {"times": _STEP_TIMES_ONLY, "euler": (*_STEP_TIMES_ONLY, "refined"), "any": SEARCH_METHODS}
"""``--family`` -> the methods whose schedules all belong to it (refined adds evaluation times,
olss linear multistep steps; auto restricts its candidates to the family)."""

EFFORTS = ("fast", "standard", "thorough")
"""``bossflow.search.auto.EFFORTS``."""

PRECISIONS = ("fp32", "bf16")
"""``bossflow.core.distributed.PRECISIONS``."""

OBJECTIVES = ("boss", "rollout", "blend", "reflow")
"""``bossflow.training.straighten.OBJECTIVES``."""

DISTANCES = ("mse", "pseudo-huber")
"""``bossflow.training.straighten.DISTANCES``."""

LR_SCHEDULES = ("constant", "cosine")
"""``bossflow.training.loop.LR_SCHEDULES``."""

STEP_SAMPLINGS = ("uniform", "error")
"""``bossflow.training.batches.STEP_SAMPLINGS``."""

TEACHER_METHODS = ("euler", "heun")
"""``bossflow.core.solvers.TEACHER_METHODS``."""

PAIR_SOLVERS = ("auto", "euler", "heun")
"""``auto`` and ``bossflow.training.pair_solver.PAIR_SOLVERS``."""

FEATURE_CLASSIFIERS = ("digits", "fashion-mnist")
"""``bossflow.evaluation.classifier.FEATURE_CLASSIFIERS``."""
