"""The pieces training/loop.py shares between teachers and straightening: setting checks and Run."""

import pytest
import torch
from torch import nn

from bossflow.core.errors import BossflowError
from bossflow.training.loop import CHECKPOINT_NAME, Run, check_resume, check_settings, loop_settings


def test_check_settings_reports_the_first_bad_setting_in_order():
    check_settings("a positive integer", steps=1, batch_size=3)
    with pytest.raises(BossflowError, match=r"^batch_size must be a positive integer, got True\.$"):
        check_settings("a positive integer", steps=1, batch_size=True)
    with pytest.raises(BossflowError, match=r"^lr must be a positive number, got -1\.0\.$"):
        check_settings("a positive number", lr=-1.0, grad_clip=0)
    with pytest.raises(BossflowError, match=r"^ema_decay must be in \[0, 1\), got 1\.$"):
        check_settings("in [0, 1)", ema_decay=1)
    with pytest.raises(BossflowError, match="checkpoint_every must be a non-negative integer"):
        check_settings("a non-negative integer", seed=0, checkpoint_every=-1)
    with pytest.raises(BossflowError, match="weight_decay must be non-negative"):
        check_settings("non-negative", weight_decay=-0.1)
    with pytest.raises(BossflowError, match="resume needs out_dir"):
        check_resume(True, None)
    check_resume(False, None)


def test_loop_settings_records_numbers_as_floats():
    assert loop_settings(8, 1, 0, 2, 0, 3) == {"batch_size": 8, "lr": 1.0, "weight_decay": 0.0, "grad_clip": 2.0,
                                               "ema_decay": 0.0, "seed": 3}


def _run(out_dir, names=None):
    module = nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.fill_(0.5)
        module.bias.fill_(-0.25)
    return Run.new(module, names, lr=0.1, weight_decay=0.0, seed=4, config={"lr": 0.1}, format_tag="test/1",
                   out_dir=out_dir)


def _step(run):
    def one_step(step):
        x = torch.randn(5, 3, generator=run.generator)
        run.optimizer.zero_grad(set_to_none=True)
        loss = run.module(x).pow(2).mean()
        loss.backward()
        run.optimizer.step()
        run.update_ema(0.9, step)
        return float(loss.detach())

    return one_step


@pytest.mark.parametrize("names", [None, ["weight"]])
def test_a_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path, names):
    whole = _run(tmp_path / "whole", names)
    whole.train(6, _step(whole), checkpoint_every=3, progress=False, desc="test")

    first = _run(tmp_path / "split", names)
    first.train(3, _step(first), checkpoint_every=3, progress=False, desc="test")
    assert first.path == tmp_path / "split" / CHECKPOINT_NAME
    second = _run(tmp_path / "split", names)
    with pytest.raises(BossflowError, match="already holds a test checkpoint"):
        second.read_checkpoint(False, "test")
    second.restore(second.read_checkpoint(True, "test"), 6, ("lr",))
    assert second.start == 3 and len(second.losses) == 3
    second.train(6, _step(second), checkpoint_every=3, progress=False, desc="test")

    assert second.losses == whole.losses
    assert all(torch.equal(second.ema[k], whole.ema[k]) for k in whole.ema)
    assert all(torch.equal(a, b) for a, b in zip(second.module.parameters(), whole.module.parameters()))
    assert set(whole.ema) == ({"weight"} if names else {"weight", "bias"})
    with pytest.raises(BossflowError, match="past the requested 2 steps"):
        _run(tmp_path / "split", names).restore(second.read_checkpoint(True, "test"), 2, ("lr",))
    assert list(whole.summary(1.26)) == ["loss_curve", "wall_seconds", "threads"]
    assert whole.summary(1.26)["wall_seconds"] == 1.3
