"""Models: the exact Gaussian-mixture flows, small velocity networks, model directories, ``--model`` specs.

* :mod:`~bossflow.models.networks`: ``GaussianMixtureFlow`` (presets ``gmm-2d``, ``gmm-64d``),
  ``VelocityMLP``, ``TinyUNet``;
* :mod:`~bossflow.models.model_dir`: a trained network as ``config.json`` + ``model.safetensors``,
  and the shipped ones in ``weights/``;
* :mod:`~bossflow.models.loading`: what a ``--model`` value names, as a velocity model.

Time convention: ``t = 0`` noise, ``t = 1`` data; every model is ``model(x, t, **cond) -> v``.
"""

from ..core.velocity import VelocityModel, broadcast_time
from .networks import PRESETS, GaussianMixtureFlow, TinyUNet, VelocityMLP, gmm_2d, gmm_64d, time_embedding

__all__ = [
    "PRESETS",
    "GaussianMixtureFlow",
    "TinyUNet",
    "VelocityMLP",
    "VelocityModel",
    "broadcast_time",
    "gmm_2d",
    "gmm_64d",
    "time_embedding",
]
