"""Schedule searches beyond the core Bellman DP (:mod:`bossflow.bellman`)."""

from .global_dp import global_error_paths, global_error_schedules

__all__ = ["global_error_paths", "global_error_schedules"]
