"""Models a user might point ``bossflow schedule --model module:attribute`` at (used by test_cli)."""

import torch

import bossflow as bf


def make_flow():
    """Zero-argument factory."""
    return bf.GaussianMixtureFlow(torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 2.0]]), std=0.3)


def velocity(x, t):
    """A plain function velocity model with no sample_shape: needs --shape."""
    return -x


instance = make_flow()
not_callable = 42


def broken_factory():
    raise RuntimeError("weights missing")


def wrong_shape(x, t):
    """A broken model: its output does not match its input."""
    return torch.zeros(x.shape[0], x.shape[1] + 1) + torch.ones(x.shape[0], 1) @ torch.ones(2, x.shape[1] + 1)
