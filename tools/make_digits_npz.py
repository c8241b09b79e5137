"""Write src/bossflow/data/digits.npz from scikit-learn's 8x8 digits (run once; needs scikit-learn).

    python tools/make_digits_npz.py

The file holds ``pixels`` (1797, 64) uint8 in 0..16 and ``labels`` (1797,) uint8 in 0..9,
exactly ``sklearn.datasets.load_digits()``'s ``data`` and ``target``; it is compressed and
written without pickling, so ``numpy.load(..., allow_pickle=False)`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "src" / "bossflow" / "data" / "digits.npz"


def main() -> None:
    bunch = load_digits()
    pixels, labels = bunch.data, bunch.target
    assert pixels.shape == (1797, 64) and labels.shape == (1797,)
    assert np.array_equal(pixels, np.round(pixels)) and pixels.min() == 0 and pixels.max() == 16
    np.savez_compressed(OUT, pixels=pixels.astype(np.uint8), labels=labels.astype(np.uint8))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
