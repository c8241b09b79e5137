"""A schedule whose step and evaluation times are trained with the student (``straighten(learn_times=True)``).

The searches pick a schedule for a fixed model; straightening then changes the model, so the
best times move. Here the K step sizes and the K evaluation times of one Euler schedule are
parameters of the rollout objective and receive gradients through the student's own K-step
rollout, jointly with its weights:

* step sizes ``dt = softmax(step_logits)`` (positive, summing to 1), so the times
  ``t_k = dt_0 + ... + dt_{k-1}`` stay strictly increasing from 0 to 1;
* evaluation times ``s_k = clamp(t_k + eval_offsets_k, 0, 1)``.

Both start at the schedule being straightened along (``step_logits = log dt``, offsets from its
evaluation times), so training begins exactly where the search ended. Time convention:
``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.schedules import Schedule


class LearnedTimes(nn.Module):
    """The step sizes and evaluation times of one K-step Euler schedule, as trainable parameters.

    Args:
        schedule: the starting schedule (its ``evaluation_times`` default to its step times).

    Attributes:
        step_logits: ``(K,)`` logits of the step sizes.
        eval_offsets: ``(K,)`` evaluation time minus step start time.
    """

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        steps = torch.as_tensor(np.diff(schedule.times), dtype=torch.float32)
        offsets = torch.as_tensor(schedule.evaluation_times - schedule.times[:-1], dtype=torch.float32)
        self.step_logits = nn.Parameter(steps.log())
        self.eval_offsets = nn.Parameter(offsets)

    @property
    def nfe(self) -> int:
        return int(self.step_logits.numel())

    def steps(self) -> tuple[Tensor, Tensor]:
        """``(dt, s)``, both ``(K,)``: the step sizes (summing to 1) and the evaluation times, differentiable."""
        dt = torch.softmax(self.step_logits, 0)
        starts = torch.cumsum(dt, 0) - dt
        return dt, (starts + self.eval_offsets).clamp(0.0, 1.0)

    def to_schedule(self, **meta: Any) -> Schedule:
        """The current times as a :class:`Schedule` (float64; the last time exactly 1)."""
        with torch.no_grad():
            dt, s = (v.detach().double().cpu().numpy() for v in self.steps())
        times = np.concatenate([[0.0], np.cumsum(dt)])
        times[-1] = 1.0
        return Schedule(times, eval_times=np.minimum(s, 1.0), **meta)


__all__ = ["LearnedTimes"]
