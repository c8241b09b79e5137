"""The core: schedules, solvers, the BOSS cost matrix and Bellman DP, and what they stand on.

Nothing here knows a network, a search beyond BOSS, training or a command line: a model is
anything callable as ``model(x, t, **cond) -> v`` (:mod:`~bossflow.core.velocity`), with
``t = 0`` noise and ``t = 1`` data. Importing this package imports none of its modules.
"""
