"""Velocity models: the exact Gaussian-mixture flow and small networks.

Time convention: ``t = 0`` is noise ``x_0 ~ N(0, I)``, ``t = 1`` is data, and a model
gives the velocity of ``dx/dt = v(x, t)``. Every solver and search in bossflow calls
``model(x, t, **cond)`` with ``x`` of shape ``(B, *shape)`` and ``t`` a float tensor of
shape ``(B,)`` in the dtype of ``x``; nothing else is assumed of a model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..core.errors import ModelSpecError
from ..core.velocity import broadcast_time


class GaussianMixtureFlow(nn.Module):
    """Exact velocity of the linear path from ``N(0, I)`` to a Gaussian mixture.

    Data: component ``k`` with mean ``mu_k``, isotropic std ``s`` and weight ``pi_k``.
    On the path ``x_t = (1 - t) x_0 + t x_1`` the marginal of component ``k`` is
    ``N(t mu_k, sigma_t^2 I)`` with ``sigma_t^2 = (1 - t)^2 + t^2 s^2``, and

        v(x, t) = sum_k r_k(x, t) [mu_k + (t s^2 - (1 - t)) / sigma_t^2 (x - t mu_k)],

    with responsibilities ``r_k ∝ pi_k N(x; t mu_k, sigma_t^2 I)`` computed as a softmax in
    log space. The ODE carries ``N(0, I)`` exactly onto the mixture at ``t = 1``, so
    errors of any sampler can be measured against the truth.

    Args:
        means: ``(K, *shape)`` component means; ``shape`` is the sample shape.
        std: isotropic std ``s > 0`` of every component.
        weights: ``(K,)`` non-negative weights (normalised here); uniform if ``None``.
    """

    def __init__(self, means: Tensor | Sequence, std: float, weights: Tensor | Sequence | None = None) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim < 2 or means.shape[0] < 1:
            raise ModelSpecError(f"means must have shape (K, *shape) with K >= 1, got {tuple(means.shape)}.")
        if not torch.isfinite(means).all():
            raise ModelSpecError("means must be finite.")
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ModelSpecError(f"std must be a positive number, got {std!r}.")
        n_components = means.shape[0]
        if weights is None:
            weights = torch.full((n_components,), 1.0 / n_components, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (n_components,) or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ModelSpecError(f"weights must be {n_components} non-negative numbers with a positive sum.")
        self.sample_shape = tuple(means.shape[1:])
        self.std = float(std)
        self.register_buffer("means", means.reshape(n_components, -1))
        self.register_buffer("weights", weights / weights.sum())

    @property
    def dim(self) -> int:
        """Flattened data dimension D."""
        return int(self.means.shape[1])

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Velocity ``(B, *shape)`` at states ``x`` ``(B, *shape)`` and times ``t`` ``(B,)``; computed in ``x.dtype``."""
        t = broadcast_time(t, x)
        flat = x.reshape(x.shape[0], -1)
        means = self.means.to(flat.dtype)
        s2 = self.std**2
        tt = t[:, None]
        var = (1 - tt) ** 2 + tt**2 * s2  # (B, 1)
        # log N(x; t mu_k, var I) up to terms equal for every k
        cross = flat @ means.T  # (B, K)
        sq_means = (means * means).sum(dim=1)  # (K,)
        logits = (2 * tt * cross - tt**2 * sq_means) / (2 * var) + torch.log(self.weights.to(flat.dtype))
        resp = torch.softmax(logits, dim=1)  # (B, K)
        gain = (tt * s2 - (1 - tt)) / var  # (B, 1)
        v = gain * flat + (1 - gain * tt) * (resp @ means)
        return v.reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
        """Draw ``n`` exact samples ``(n, *shape)`` from the mixture (the data at ``t = 1``)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[comp] + self.std * eps
        return x.to(dtype).reshape(n, *self.sample_shape)

    def extra_repr(self) -> str:
        return f"components={self.means.shape[0]}, shape={self.sample_shape}, std={self.std}"


def gmm_2d() -> GaussianMixtureFlow:
    """Preset ``gmm-2d``: 8 equal Gaussians on a circle of radius 4, std 0.2."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 4.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixtureFlow(means, std=0.2)


def gmm_64d(seed: int = 0) -> GaussianMixtureFlow:
    """Preset ``gmm-64d``: 20 equal Gaussians in 64-D, means ``N(0, I)`` drawn with a fixed seed, std 0.1."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(20, 64, generator=gen, dtype=torch.float64)
    return GaussianMixtureFlow(means, std=0.1)


PRESETS = {"gmm-2d": gmm_2d, "gmm-64d": gmm_64d}


def time_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of times ``t`` ``(B,)`` in [0, 1] (scaled by 1000 first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class VelocityMLP(nn.Module):
    """Small MLP velocity model for flat data: ``v = MLP([x, emb(t)])``.

    Args:
        dim: data dimension D (inputs ``(B, D)`` or ``(B, *shape)`` with ``prod(shape) = D``).
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        time_dim: size of the sinusoidal time embedding.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 32) -> None:
        super().__init__()
        self.dim, self.time_dim = dim, time_dim
        layers: list[nn.Module] = []
        width = dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        t = broadcast_time(t, x)
        flat = x.reshape(x.shape[0], -1)
        h = torch.cat([flat, time_embedding(t, self.time_dim).to(flat.dtype)], dim=1)
        return self.net(h).reshape(x.shape)


class _ResBlock(nn.Module):
    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        groups = math.gcd(8, channels)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(nn.functional.silu(h))


class TinyUNet(nn.Module):
    """A two-level convolutional UNet velocity model for small images ``(B, C, H, W)``, H and W even.

    Args:
        channels: image channels C.
        width: channels at full resolution (doubled at half resolution).
        time_dim: size of the time embedding fed to every block (FiLM).
    """

    def __init__(self, channels: int = 3, width: int = 32, time_dim: int = 64) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.down_block = _ResBlock(width, time_dim)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid_block = _ResBlock(2 * width, time_dim)
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.up_block = _ResBlock(width, time_dim)
        self.head = nn.Sequential(nn.GroupNorm(math.gcd(8, width), width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        t = broadcast_time(t, x)
        emb = self.time_mlp(time_embedding(t, self.time_dim).to(x.dtype))
        h0 = self.down_block(self.stem(x), emb)
        h1 = self.mid_block(self.down(h0), emb)
        h = self.up_block(self.up(h1) + h0, emb)
        return self.head(h)
