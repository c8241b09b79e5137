"""Training: teachers from data, teacher pairs, and BOSS straightening (full or LoRA).

* :mod:`~bossflow.training.loop`: what every loop shares (EMA, resumable checkpoints, steps);
* :mod:`~bossflow.training.teachers`: flow-matching teachers for the shipped presets;
* :mod:`~bossflow.training.pairs`: teacher states at schedule times, cached in shards;
* :mod:`~bossflow.training.straighten`: fine-tuning a model to be straight along its schedule.

Time convention: ``t = 0`` noise, ``t = 1`` data.
"""
