"""Every registered search: valid schedules for every budget 1..10, deterministic, usable through search()."""

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.errors import BossflowError
from bossflow.search import SEARCHES, sample_with, search

NFES = list(range(1, 11))
# Reduced L-BFGS budgets keep the refinement-based searches to seconds; their quality is tested elsewhere.
FAST = {"refined": {"steps": 30, "screen_steps": 10}, "auto": {"refine": {"steps": 30, "screen_steps": 10}}}


@pytest.fixture(scope="module")
def case():
    model = bf.models.gmm_2d()
    noise = bf.gaussian_noise(24, (2,), seed=0, dtype=torch.float64)
    grid = bf.uniform_schedule(20).times
    return model, noise, grid


@pytest.mark.parametrize("method", list(SEARCHES))
def test_every_budget_valid_and_deterministic(case, method):
    model, noise, grid = case
    first = SEARCHES[method](model, noise, grid, NFES, provenance={"model": "gmm-2d"}, **FAST.get(method, {}))
    again = SEARCHES[method](model, noise, grid, NFES, provenance={"model": "gmm-2d"}, **FAST.get(method, {}))
    assert sorted(first) == NFES
    for nfe in NFES:
        s = first[nfe]
        assert isinstance(s, bf.Schedule) and s.nfe == nfe
        assert s.times[0] == 0.0 and s.times[-1] == 1.0 and np.all(np.diff(s.times) > 0)
        assert s.meta["model"] == "gmm-2d" and s.meta["method"]
        np.testing.assert_array_equal(s.times, again[nfe].times)
        if s.eval_times is not None:
            np.testing.assert_array_equal(s.eval_times, again[nfe].eval_times)
        x = sample_with(model, noise, s)
        assert x.shape == noise.shape and torch.isfinite(x).all()


@pytest.mark.parametrize("method", list(SEARCHES))
def test_sampler_spends_nfe_model_calls(case, method):
    model, noise, grid = case
    s = search(model, 3, grid, noise, method=method, **FAST.get(method, {}))
    counter = bf.NFECounter(model)
    sample_with(counter, noise, s)
    assert counter.nfe == 3


def test_unknown_method(case):
    model, noise, grid = case
    with pytest.raises(BossflowError, match="unknown search method"):
        search(model, 2, grid, noise, method="nope")
