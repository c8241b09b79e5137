"""The table of searches by name, filled by :mod:`bossflow.search` when the package is imported.

It lives apart from the package so that searches which run other searches by name
(``auto``'s candidates, ``refined``'s starts) can read it without importing the package
that imports them. Every search has the signature of the interface (:mod:`bossflow.search`).
"""

from __future__ import annotations

from typing import Callable

from ..core.schedules import Schedule

SearchFunction = Callable[..., dict[int, Schedule]]
"""``fn(model, noise, grid, nfes, *, cond=None, provenance=None, **options) -> {nfe: Schedule}``."""

SEARCHES: dict[str, SearchFunction] = {}
"""Search name -> function; see :mod:`bossflow.search` for the entries."""

WITH_PROGRESS = ("bellman", "global-dp", "evolution", "refined", "auto")
"""Searches that take ``progress=True`` (a tqdm bar over their long work); the others take seconds."""
