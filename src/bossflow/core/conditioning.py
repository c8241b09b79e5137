"""Per-sample conditioning held as a table of distinct values and an index into it.

A prompt set of ``P`` prompts conditions ``n >> P`` noises: sample ``i`` takes row
``index[i]`` of every table entry. Expanding the table to ``n`` rows would cost ``n / P``
times the memory (an SD3 prompt embedding is about 5 MB in float32), so the rows are gathered
only for the samples of a batch (:meth:`IndexedCond.rows`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import BossflowError


@dataclass
class IndexedCond:
    """Conditioning of ``n`` samples: ``{key: table[key][index[i]]}`` for sample ``i``.

    Attributes:
        table: ``{key: (P, ...)}`` tensors, one row per distinct condition (a prompt's embeddings).
        index: ``(n,)`` int64, the table row of each sample.
    """

    table: dict[str, Tensor]
    index: Tensor

    def __post_init__(self) -> None:
        if not self.table:
            raise BossflowError("an indexed conditioning needs at least one table entry.")
        counts = {int(v.shape[0]) for v in self.table.values()}
        if len(counts) != 1:
            raise BossflowError(f"the conditioning table's entries have different row counts {sorted(counts)}.")
        (rows,) = counts
        self.index = torch.as_tensor(self.index, dtype=torch.int64).cpu()
        in_range = self.index.numel() == 0 or (int(self.index.min()) >= 0 and int(self.index.max()) < rows)
        if self.index.ndim != 1 or not in_range:
            raise BossflowError(f"the conditioning index must be a 1-D tensor of row numbers 0..{rows - 1} of the table.")

    @property
    def n_samples(self) -> int:
        return int(self.index.numel())

    def rows(self, samples: Tensor | slice) -> dict[str, Tensor]:
        """``{key: (b, ...)}``: the conditioning of samples ``samples`` (an index tensor or a slice of ``0 .. n``)."""
        picked = self.index[samples] if isinstance(samples, slice) else self.index[torch.as_tensor(samples).cpu()]
        return {k: v[picked.to(v.device)] for k, v in self.table.items()}

    def table_sha256(self) -> str:
        """SHA-256 of the table (keys, shapes, dtypes and values): what a cache made with it records."""
        h = hashlib.sha256()
        for key in sorted(self.table):
            value = self.table[key].detach().cpu().contiguous()
            h.update(f"{key}:{tuple(value.shape)}:{value.dtype}".encode())
            h.update(value.view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
