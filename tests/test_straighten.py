"""Straightening: pair data, BOSS and reflow training, LoRA, resume, the ``straighten`` command.

The teacher is the shipped 2-D flow (``gmm-2d-teacher``, a VelocityMLP trained on the eight
Gaussians), so every run is real training on a real network, small enough for the default suite.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.checkpoints import load_model_dir, shipped_model_dir
from bossflow.cli import main
from bossflow.core.cost import model_fingerprint
from bossflow.errors import BossflowError, FileFormatError, ScheduleError
from bossflow.training.pair_solver import PAIR_SOLVERS, choose_pair_solver
from bossflow.pairs import PairData, reference_grid, schedule_transitions, state_times, teacher_pairs, teacher_states
from bossflow.training.batches import boss_batch, transition_table
from bossflow.straighten import (
    CHECKPOINT_NAME,
    LoraSettings,
    add_lora,
    lora_targets,
    merge_lora,
    straighten,
)

SHAPE = (2,)


@pytest.fixture(scope="module")
def teacher():
    model, _ = load_model_dir(shipped_model_dir("gmm-2d-teacher"))
    return model


@pytest.fixture(scope="module")
def schedules():
    return {2: bf.custom_schedule([0.0, 0.45, 1.0]), 4: bf.custom_schedule([0.0, 0.3, 0.55, 0.8, 1.0])}


@pytest.fixture(scope="module")
def pairs(teacher, schedules):
    return teacher_pairs(teacher, list(schedules.values()), SHAPE, samples=512, seed=0, grid_steps=50, progress=False)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rmse(model, schedule, teacher, n=1000, seed=7):
    noise = bf.gaussian_noise(n, SHAPE, seed=seed)
    with torch.no_grad():
        reference = bf.euler(teacher, noise, bf.uniform_schedule(200))
        return bf.endpoint_rmse(bf.euler(model, noise, schedule), reference)


# --- pair data -----------------------------------------------------------------------------


def test_pair_states_are_the_teachers_fine_trajectory(teacher, schedules, pairs):
    assert isinstance(pairs, PairData)
    assert pairs.states.shape == (512, 6, 2) and pairs.states.dtype == torch.float32
    np.testing.assert_allclose(pairs.times, [0.0, 0.3, 0.45, 0.55, 0.8, 1.0])
    assert pairs.nfes == [2, 4] and len(pairs.transitions) == 6
    noise = bf.gaussian_noise(512, SHAPE, seed=0)
    assert torch.equal(pairs.states[:, 0], noise)
    # The fine grid holds every state time, so the Euler solution there is the state.
    grid = np.union1d(np.linspace(0, 1, 51), pairs.times)
    with torch.no_grad():
        traj = bf.fine_trajectory(teacher, noise[:16], grid)
    for j, t in enumerate(pairs.times):
        torch.testing.assert_close(pairs.states[:16, j], traj.xs[int(np.argmin(np.abs(grid - t)))], rtol=0, atol=1e-6)


def test_transitions_follow_each_schedule_with_its_eval_times():
    a = bf.custom_schedule([0.0, 0.5, 1.0], eval_times=[0.1, 0.6])
    b = bf.custom_schedule([0.0, 0.25, 0.5, 1.0])
    times = state_times([a, b])
    np.testing.assert_array_equal(times, [0.0, 0.25, 0.5, 1.0])
    steps = schedule_transitions([b, a], times)
    assert [(s.nfe, s.a, s.b, s.eval_time) for s in steps] == [
        (2, 0, 2, 0.1), (2, 2, 3, 0.6), (3, 0, 1, 0.0), (3, 1, 2, 0.25), (3, 2, 3, 0.5)]


def test_olss_schedules_are_refused():
    olss = bf.Schedule([0.0, 0.5, 1.0], method="olss", olss={"coefficients": []})
    with pytest.raises(ScheduleError, match="OLSS"):
        schedule_transitions([olss], state_times([olss]))


def test_pair_cache_is_reused_extended_and_checked(tmp_path, teacher, schedules, monkeypatch):
    cache = tmp_path / "pairs"
    first = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=40, shard_size=16, grid_steps=20, cache_dir=cache,
                          progress=False)
    assert sorted(p.name for p in cache.iterdir()) == ["meta.json", "shard-00000.safetensors",
                                                      "shard-00001.safetensors", "shard-00002.safetensors"]
    # More samples: only the short last shard and the new one are made, the complete shards are read as they were
    # (the remade rows 32..39 are integrated in another batch, which may round differently on AVX-512 CPUs).
    more = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=20, cache_dir=cache,
                         progress=False)
    assert torch.equal(more.states[:32], first.states[:32])
    torch.testing.assert_close(more.states[:40], first.states, rtol=1e-6, atol=1e-6)
    direct = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, grid_steps=20, progress=False)
    torch.testing.assert_close(more.states, direct.states, rtol=0, atol=1e-6)

    # A complete cache is read, never recomputed.
    import bossflow.pairs as pairs_module

    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(pairs_module, "teacher_states", fail)
    again = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=20, cache_dir=cache,
                          progress=False)
    assert torch.equal(again.states, more.states)
    monkeypatch.undo()

    # Other settings: a clear refusal, nothing overwritten.
    with pytest.raises(BossflowError, match="grid_steps"):
        teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=30, cache_dir=cache,
                      progress=False)
    with pytest.raises(BossflowError, match="grid_power, substeps, method"):
        teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=20, grid_power=1.5,
                      substeps=2, method="heun", cache_dir=cache, progress=False)
    other = bf.VelocityMLP(2, hidden=16, depth=1, time_dim=8)
    with pytest.raises(BossflowError, match="model_sha256"):
        teacher_pairs(other, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=20, cache_dir=cache,
                      progress=False)
    (cache / "shard-00001.safetensors").write_bytes(b"not a shard")
    with pytest.raises(FileFormatError, match="damaged"):
        teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=20, cache_dir=cache,
                      progress=False)


def test_a_complete_pair_cache_is_shared_while_another_run_holds_it(tmp_path, teacher, schedules):
    from bossflow.core._io import exclusive

    cache = tmp_path / "pairs"
    made = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=40, shard_size=16, grid_steps=20, cache_dir=cache,
                         progress=False)
    with exclusive(cache, "pairs folder"):  # another run reading or writing the folder
        shared = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=40, shard_size=16, grid_steps=20,
                               cache_dir=cache, progress=False)
        assert torch.equal(shared.states, made.states)
        with pytest.raises(BossflowError, match="another run is writing the pairs folder"):  # would write: refused
            teacher_pairs(teacher, [schedules[2]], SHAPE, samples=60, shard_size=16, grid_steps=20, cache_dir=cache,
                          progress=False)
    assert sorted(p.name for p in cache.iterdir())[-1] == "shard-00002.safetensors"  # nothing written meanwhile


def test_select_keeps_the_steps_of_some_budgets(pairs):
    two = pairs.select([2])
    assert two.nfes == [2] and len(two.transitions) == 2 and two.states is pairs.states
    with pytest.raises(BossflowError, match="NFE"):
        pairs.select([3])


def test_a_cache_for_more_budgets_serves_fewer(tmp_path, teacher, schedules):
    cache = tmp_path / "pairs"
    both = teacher_pairs(teacher, list(schedules.values()), SHAPE, samples=24, grid_steps=20, cache_dir=cache, progress=False)
    two = teacher_pairs(teacher, [schedules[2]], SHAPE, samples=24, grid_steps=20, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(two.times, both.times)
    assert two.nfes == [2] and len(two.transitions) == 2
    assert torch.equal(two.states, both.states)


def test_teacher_states_do_not_depend_on_batching(teacher):
    noise = bf.gaussian_noise(30, SHAPE, seed=3)
    times = np.array([0.0, 0.4, 1.0])
    a = teacher_states(teacher, noise, times, grid_steps=10, batch_size=30)
    b = teacher_states(teacher, noise, times, grid_steps=10, batch_size=7)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # float32 rounding may depend on the batch (SIMD tails)


def test_the_fine_grid_can_be_denser_towards_the_data():
    times = np.array([0.0, 0.37, 1.0])
    np.testing.assert_allclose(reference_grid(times, 4), [0.0, 0.25, 0.37, 0.5, 0.75, 1.0])
    warped = reference_grid(times, 20, 2.0)
    assert warped[0] == 0.0 and warped[-1] == 1.0 and np.any(np.isclose(warped, 0.37))
    assert np.all(np.diff(warped) > 0) and np.diff(warped)[-1] < np.diff(warped)[0] / 10
    for power in (0.5, 5.0, True):
        with pytest.raises(BossflowError, match="grid_power"):
            reference_grid(times, 20, power)


def test_heun_on_a_warped_grid_beats_euler_on_a_fine_uniform_one():
    """On a smooth flow (the exact mixture flow) 40 Heun calls beat 100 Euler calls against a 800-call solution."""
    teacher = bf.GaussianMixtureFlow(torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]]), std=0.3)
    noise = bf.gaussian_noise(200, SHAPE, seed=4)
    times = np.array([0.0, 0.45, 1.0])
    truth = teacher_states(teacher, noise, times, grid_steps=400, method="heun")
    euler = teacher_states(teacher, noise, times, grid_steps=100)
    heun = teacher_states(teacher, noise, times, grid_steps=20, grid_power=1.5, method="heun")
    error = {name: float((states - truth).pow(2).mean().sqrt()) for name, states in (("euler", euler), ("heun", heun))}
    assert error["heun"] < error["euler"] / 2, error


def test_the_pair_solver_is_chosen_by_its_accuracy_on_the_teacher(teacher):
    """Heun on the warped grid where it beats 100 Euler steps (a smooth flow), Euler where it does not (sharp modes)."""
    times = np.array([0.0, 0.45, 1.0])
    smooth = bf.GaussianMixtureFlow(torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]]), std=0.3)
    chosen, errors = choose_pair_solver(smooth, SHAPE, times)
    assert chosen == "heun" and errors["heun"] < errors["euler"], errors
    chosen, errors = choose_pair_solver(teacher, SHAPE, times)
    assert chosen == "euler" and errors["heun"] > errors["euler"], errors
    assert PAIR_SOLVERS["heun"].calls(times) < PAIR_SOLVERS["euler"].calls(times) / 2


def test_cmd_straighten_auto_pair_solver_is_measured_once_and_reused(tmp_path, capsys, schedules):
    sched = _schedule_file(tmp_path, schedules)
    argv = ["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--nfe", "2", "--samples", "32",
            "--steps", "2", "--batch-size", "8", "--pairs", str(tmp_path / "pairs"), "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "pair solver: euler (RMSE on 64 noises" in printed
    meta = json.loads((tmp_path / "pairs" / "meta.json").read_text())
    assert (meta["method"], meta["grid_steps"], meta["grid_power"]) == ("euler", 100, 1.0)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0  # the folder's solver, not measured again
    assert "pair solver" not in capsys.readouterr().out
    assert main([*argv, "--grid-steps", "20", "--out", str(tmp_path / "c")]) == 2
    assert "--pair-solver euler or heun" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_pair_solver_settings_are_refused_before_any_work(teacher, schedules, tmp_path):
    for settings, match in (({"method": "rk4"}, "euler or heun"), ({"grid_power": 0.9}, "grid_power"),
                            ({"substeps": 0}, "substeps")):
        with pytest.raises(BossflowError, match=match):
            teacher_pairs(teacher, [schedules[2]], SHAPE, samples=8, cache_dir=tmp_path / "pairs", progress=False,
                          **settings)
    assert not (tmp_path / "pairs").exists()


# --- training -------------------------------------------------------------------------------


def test_boss_batch_targets_are_the_euler_step_velocities(pairs):
    gen = torch.Generator().manual_seed(0)
    table = transition_table(pairs)
    x_a, s_a, target, _ = boss_batch(pairs, table, gen, 4096)
    # Every drawn pair is an exact transition of one schedule.
    steps = {(round(pairs.times[tr.a], 6), round(pairs.times[tr.b], 6)) for tr in pairs.transitions}
    assert set(np.round(s_a.double().numpy(), 6).tolist()) <= {a for a, _ in steps}
    # A schedule uniformly, then one of its steps: t_a = 0 opens both, 1/2 * 1/2 + 1/2 * 1/4 = 3/8 of the draws.
    share = float((s_a == 0).double().mean())
    assert 0.35 < share < 0.40
    assert torch.isfinite(target).all() and x_a.shape == target.shape == (4096, 2)


def test_straightening_lowers_the_two_step_error_on_the_2d_teacher(teacher, schedules, pairs):
    before = _rmse(teacher, schedules[2], teacher)
    student, record = straighten(teacher, pairs.select([2]), steps=300,
                                 batch_size=256, lr=1e-3, seed=0, progress=False)
    after = _rmse(student, schedules[2], teacher)
    assert after < 0.6 * before, (before, after)
    assert record["objective"] == "boss" and record["steps"] == 300 and len(record["loss_curve"]) == 20
    assert record["loss_curve"][-1][1] < record["loss_curve"][0][1]
    assert not any(p.requires_grad for p in student.parameters())


def test_rollout_objective_lowers_the_two_step_error_more_directly(teacher, schedules, pairs):
    before = _rmse(teacher, schedules[2], teacher)
    student, record = straighten(teacher, pairs.select([2]), objective="rollout", steps=150, batch_size=256, lr=1e-3,
                                 progress=False)
    assert record["objective"] == "rollout" and "rollout" in record["objective_text"]
    assert _rmse(student, schedules[2], teacher) < 0.6 * before


def test_straightening_leaves_the_teacher_alone_and_is_seeded(teacher, pairs):
    before = _weights(teacher)
    a, _ = straighten(teacher, pairs, steps=5, batch_size=32, seed=3, progress=False)
    b, _ = straighten(teacher, pairs, steps=5, batch_size=32, seed=3, progress=False)
    c, _ = straighten(teacher, pairs, steps=5, batch_size=32, seed=4, progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("objective", ["boss", "rollout"])
def test_micro_batches_accumulate_to_the_same_step(teacher, pairs, objective):
    """Gradient accumulation over micro-batches bounds memory and takes the full batch's step (to rounding)."""
    whole, a = straighten(teacher, pairs, objective=objective, steps=4, batch_size=32, seed=1, progress=False)
    parts, b = straighten(teacher, pairs, objective=objective, steps=4, batch_size=32, seed=1, micro_batch=5,
                          progress=False)
    # Adam divides by the gradient's size, so a near-zero gradient entry summed in another order can move its weight
    # by up to lr (1e-4) per step; 1e-5 is a tenth of one such step.
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(parts.state_dict()[k], v, rtol=1e-5, atol=1e-5)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-5)


def test_bf16_autocast_trains_and_is_part_of_the_resume_settings(tmp_path, teacher, pairs, schedules):
    before = _rmse(teacher, schedules[2], teacher)
    student, record = straighten(teacher, pairs, steps=60, batch_size=64, lr=1e-3, precision="bf16",
                                 out_dir=tmp_path, checkpoint_every=30, progress=False)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert _rmse(student, schedules[2], teacher) < before
    with pytest.raises(BossflowError, match="precision"):
        straighten(teacher, pairs, steps=80, batch_size=64, lr=1e-3, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(BossflowError, match="precision"):
        straighten(teacher, pairs, steps=2, precision="fp16", progress=False)
    with pytest.raises(BossflowError, match="micro_batch"):
        straighten(teacher, pairs, steps=2, micro_batch=0, progress=False)


def test_reflow_trains_on_straight_couplings(teacher, pairs):
    student, record = straighten(teacher, pairs, objective="reflow", steps=200, batch_size=256, lr=1e-3, progress=False)
    assert record["objective"] == "reflow"
    # Reflow makes the one-step map closer to the teacher's coupling than the teacher itself.
    one_step = bf.uniform_schedule(1)
    assert _rmse(student, one_step, teacher) < _rmse(teacher, one_step, teacher)


def test_lora_trains_only_the_adapters_and_merges_exactly(teacher, pairs):
    settings = LoraSettings(rank=4)
    adapted = add_lora(teacher, settings, seed=0)
    base = {k: v.detach().clone() for k, v in adapted.named_parameters() if "lora_" not in k}
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    names = [k for k, p in adapted.named_parameters() if p.requires_grad]
    assert names and all("lora_" in k for k in names)
    x = torch.randn(8, 2)
    t = torch.rand(8)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x, t), teacher(x, t), rtol=0, atol=0)  # B starts at zero
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    table = transition_table(pairs)
    for _ in range(5):
        x_a, s_a, target, _ = boss_batch(pairs, table, gen, 64)
        loss = (adapted(x_a, s_a) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for k, p in adapted.named_parameters():
        if "lora_" not in k:
            assert torch.equal(p, base[k]), k  # base weights bitwise unchanged
    merged = merge_lora(adapted)
    assert type(merged) is type(teacher)
    assert set(merged.state_dict()) == set(teacher.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t), adapted(x, t), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(merged(x, t), teacher(x, t))


def test_lora_straightening_exports_a_plain_network(tmp_path, teacher, pairs):
    student, record = straighten(teacher, pairs, steps=20, batch_size=64, lora=LoraSettings(rank=2), out_dir=tmp_path,
                                 checkpoint_every=10, progress=False)
    assert type(student) is type(teacher) and set(student.state_dict()) == set(teacher.state_dict())
    assert record["lora"] == {"rank": 2, "alpha": 2.0, "targets": None}
    assert record["trainable_parameters"] < sum(p.numel() for p in teacher.parameters()) / 2
    from safetensors import safe_open

    with safe_open(str(tmp_path / CHECKPOINT_NAME), framework="pt") as f:
        saved = [k for k in f.keys() if k.startswith("model.")]
    assert saved and all("lora_" in k for k in saved)  # the checkpoint holds only the adapters


def test_lora_settings_are_checked(teacher):
    assert lora_targets(teacher)
    with pytest.raises(BossflowError, match="not nn.Linear"):
        add_lora(teacher, LoraSettings(rank=2, targets=("nonexistent",)))
    with pytest.raises(BossflowError, match="rank"):
        add_lora(teacher, LoraSettings(rank=0))


@pytest.mark.parametrize("lora", [None, LoraSettings(rank=2)], ids=["full", "lora"])
def test_resume_after_a_kill_gives_the_same_weights(tmp_path, teacher, pairs, lora):
    settings = dict(steps=12, batch_size=32, lr=1e-3, lora=lora, checkpoint_every=5, progress=False)
    whole, _ = straighten(teacher, pairs, out_dir=tmp_path / "whole", **settings)

    def kill(step, loss):
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        straighten(teacher, pairs, out_dir=tmp_path / "killed", on_step=kill, **settings)
    with pytest.raises(BossflowError, match="resume"):
        straighten(teacher, pairs, out_dir=tmp_path / "killed", **settings)
    resumed, record = straighten(teacher, pairs, out_dir=tmp_path / "killed", resume=True, **settings)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert record["steps"] == 12


def test_resume_refuses_other_settings_and_damaged_checkpoints(tmp_path, teacher, pairs):
    straighten(teacher, pairs, steps=4, batch_size=16, out_dir=tmp_path, checkpoint_every=2, progress=False)
    with pytest.raises(BossflowError, match="lr"):
        straighten(teacher, pairs, steps=8, batch_size=16, lr=5e-4, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(BossflowError, match="objective"):
        straighten(teacher, pairs, objective="reflow", steps=8, batch_size=16, out_dir=tmp_path, resume=True,
                   progress=False)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x00" * 64)
    with pytest.raises(FileFormatError, match="damaged"):
        straighten(teacher, pairs, steps=8, batch_size=16, out_dir=tmp_path, resume=True, progress=False)


def test_a_student_can_start_from_another_budgets_student(tmp_path, teacher, pairs):
    """init: the smaller budget starts from the larger one's student; the pairs stay the teacher's."""
    four, _ = straighten(teacher, pairs.select([4]), objective="rollout", steps=30, batch_size=64, lr=2e-3,
                         progress=False)
    before = _weights(four)
    settings = dict(objective="rollout", steps=1, batch_size=16, lr=1e-12, ema_decay=0.0, progress=False)
    two, record = straighten(teacher, pairs.select([2]), init=four, **settings)
    for k, v in two.state_dict().items():
        torch.testing.assert_close(v, four.state_dict()[k], rtol=0, atol=1e-6)
        assert torch.equal(four.state_dict()[k], before[k]), k  # a copy is trained, init is left alone
    assert record["init_sha256"] != record["teacher_sha256"]
    straighten(teacher, pairs.select([2]), init=four, out_dir=tmp_path, **settings)
    with pytest.raises(BossflowError, match="init_sha256"):
        straighten(teacher, pairs.select([2]), out_dir=tmp_path, resume=True, **settings)
    with pytest.raises(BossflowError, match="architecture"):
        straighten(teacher, pairs, init=bf.VelocityMLP(2, hidden=8, depth=1, time_dim=4), **settings)
    with pytest.raises(BossflowError, match="not both"):
        straighten(None, pairs, init=four, student=copy.deepcopy(four), **settings)


def test_a_teacher_checkpoint_is_not_a_straightening_checkpoint(tmp_path, teacher, pairs):
    from bossflow.teachers import train_teacher

    train_teacher(torch.randn(64, 2), architecture="VelocityMLP", arch_kwargs={"dim": 2, "hidden": 8, "depth": 1,
                  "time_dim": 4}, steps=2, batch_size=8, out_dir=tmp_path, checkpoint_every=1, progress=False)
    with pytest.raises(FileFormatError, match="straighten-checkpoint"):
        straighten(teacher, pairs, steps=4, out_dir=tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("kwargs, words", [
    (dict(objective="distill"), "objective"),
    (dict(steps=0), "steps"),
    (dict(lr=-1.0), "lr"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(distance="lpips"), "distance"),
    (dict(resume=True), "out_dir"),
])
def test_bad_settings_are_refused(teacher, pairs, kwargs, words):
    with pytest.raises(BossflowError, match=words):
        straighten(teacher, pairs, progress=False, **kwargs)


# --- the command ----------------------------------------------------------------------------


def _schedule_file(tmp_path, schedules):
    path = tmp_path / "sched.json"
    bf.save_schedules(path, list(schedules.values()))
    return path


def test_cmd_straighten_end_to_end_then_sample_and_search_again(tmp_path, capsys, schedules):
    sched = _schedule_file(tmp_path, schedules)
    out = tmp_path / "boss"
    argv = ["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--nfe", "2", "--out", str(out),
            "--steps", "30", "--samples", "64", "--pair-solver", "euler", "--grid-steps", "20", "--lr", "1e-3", "--quiet",
            "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "along NFE 2" in printed and "model.safetensors" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "VelocityMLP" and config["training"]["objective"] == "rollout"  # the default
    assert config["training"]["pairs"]["nfes"] == [2] and config["data"]["name"] == "gmm-2d"
    assert bf.load_schedules(out / "schedules.json").keys() == {2}
    assert (out / "pairs" / "meta.json").exists()
    model, _ = load_model_dir(out)
    assert model.sample_shape == (2,)

    # The straightened model is a model directory like any other: sample it, search it again.
    assert main(["sample", "--model", str(out), "--schedule", str(sched), "--nfe", "2", "--n", "16",
                 "--out", str(tmp_path / "x.npy"), "--quiet"]) == 0
    assert np.load(tmp_path / "x.npy").shape == (16, 2)
    assert main(["schedule", "--model", str(out), "--method", "bellman", "--nfe", "2", "--samples", "32", "--grid-steps", "20",
                 "--out", str(tmp_path / "again.json"), "--quiet"]) == 0
    assert bf.load_schedules(tmp_path / "again.json").keys() == {2}

    # Rerunning into the same folder is refused; --resume of a finished run just exports again.
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0


def test_cmd_straighten_device_option(tmp_path, capsys, schedules):
    sched = _schedule_file(tmp_path, schedules)
    common = ["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--steps", "3", "--samples", "16",
              "--pair-solver", "euler", "--grid-steps", "10", "--quiet"]
    assert main([*common, "--device", "auto", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--device", "nonsense", "--out", str(tmp_path / "b")]) == 2
    assert "device 'nonsense'" in capsys.readouterr().err
    assert main([*common, "--precision", "bf16", "--micro-batch", "4", "--out", str(tmp_path / "c")]) == 0
    training = json.loads((tmp_path / "c" / "nfe-2" / "config.json").read_text())["training"]
    assert training["precision"] == "bf16"


def test_cmd_straighten_lora_and_reflow_share_the_pairs(tmp_path, capsys, schedules):
    sched = _schedule_file(tmp_path, schedules)
    common = ["--model", "gmm-2d-teacher", "--schedule", str(sched), "--steps", "10", "--samples", "32",
              "--pair-solver", "euler", "--grid-steps", "20", "--pairs", str(tmp_path / "pairs"), "--quiet"]
    assert main(["straighten", *common, "--lora-rank", "2", "--out", str(tmp_path / "lora")]) == 0
    assert main(["straighten", *common, "--objective", "reflow", "--out", str(tmp_path / "reflow")]) == 0
    lora = json.loads((tmp_path / "lora" / "nfe-2" / "config.json").read_text())["training"]
    reflow = json.loads((tmp_path / "reflow" / "config.json").read_text())["training"]
    assert lora["lora"]["rank"] == 2 and reflow["objective"] == "reflow"
    assert lora["pairs"]["times"] == reflow["pairs"]["times"]
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["meta.json", "shard-00000.safetensors"]


@pytest.mark.parametrize("extra, words", [
    (["--model", "gmm-2d"], "not a model directory"),
    (["--model", "gmm-2d-teacher"], "--schedule"),
    (["--model", "gmm-2d-teacher", "--schedule", "missing.json"], "does not exist"),
    (["--model", "gmm-2d-teacher", "--schedule", "SCHED", "--nfe", "3"], "no schedule with NFE [3]"),
    (["--model", "gmm-2d-teacher", "--schedule", "SCHED", "--lora-alpha", "4"], "--lora-rank"),
    (["--model", "gmm-2d-teacher", "--schedule", "SCHED", "--lora-rank", "2", "--lora-targets", "nope"], "not nn.Linear"),
    (["--model", "NOTADIR"], "no config.json"),
    (["--model", "gmm-2d-teacher", "--schedule", "SCHED", "--objective", "boss", "--learn-times"], "--objective rollout"),
    (["--model", "gmm-2d-teacher", "--schedule", "SCHED", "--step-sampling", "error"], "--objective boss"),
    (["--model", "diffusers:NOTADIR", "--schedule", "SCHED", "--learn-times", "--budgets", "separate"],
     "--learn-times, --budgets separate apply to model directories only"),
])
def test_cmd_straighten_bad_input_is_one_line(tmp_path, capsys, schedules, extra, words):
    sched = _schedule_file(tmp_path, schedules)
    (tmp_path / "notadir").mkdir()
    extra = [str(sched) if e == "SCHED" else str(tmp_path / "notadir") if e == "NOTADIR" else e for e in extra]
    code = main(["straighten", *extra, "--out", str(tmp_path / "out"), "--steps", "2", "--samples", "8", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert words in err, err
    assert not (tmp_path / "out" / "config.json").exists()


def test_cmd_straighten_damaged_checkpoint_is_one_line(tmp_path, capsys, schedules):
    sched = _schedule_file(tmp_path, schedules)
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes(b"garbage")
    code = main(["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--nfe", "2", "--out", str(out),
                 "--steps", "2", "--samples", "8", "--quiet", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "damaged" in err and err.count("\n") == 1


def test_straighten_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["straighten", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--lora-rank" in out and "reflow" in out


@pytest.mark.parametrize("name, nfe", [("digits-boss-2", 2), ("digits-boss-4", 4)])
def test_shipped_straightened_digits_beat_their_teacher_along_their_schedules(name, nfe):
    from bossflow.checkpoints import shipped_model_dir as shipped

    teacher, _ = load_model_dir(shipped("digits"))
    student, config = load_model_dir(shipped(name))
    assert config["training"]["objective"] == "rollout" and config["data"]["name"] == "digits"
    assert config["weights_dtype"] == "float16"
    schedules = bf.load_schedules(shipped(name) / "schedules.json")
    assert sorted(schedules) == [nfe]
    noise = bf.gaussian_noise(300, (1, 8, 8), seed=11)
    with torch.no_grad():
        reference = bf.euler(teacher, noise, bf.uniform_schedule(100))
        ours = bf.endpoint_rmse(bf.euler(student, noise, schedules[nfe]), reference)
        theirs = min(bf.endpoint_rmse(bf.euler(teacher, noise, schedule), reference)  # its learned times, or uniform
                     for schedule in (schedules[nfe], bf.uniform_schedule(nfe)))
    assert ours < 0.5 * theirs, (ours, theirs)


def test_lora_without_peft_names_the_extra(monkeypatch, tmp_path, capsys):
    import sys

    from bossflow.cli import main

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft then raises ImportError, as where it is not installed
    argv = ["straighten", "--model", "digits", "--schedule", "uniform", "--nfe", "2", "--lora-rank", "4",
            "--steps", "1", "--samples", "4", "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install bossflow[lora]" in err
    assert not (tmp_path / "out" / "pairs").exists()  # refused before any pair was made


def test_streamed_pairs_index_as_the_tensor_and_train_to_the_same_weights(tmp_path):
    from bossflow.training.pairs import ShardedStates

    teacher = bf.models.VelocityMLP(2, hidden=16)
    schedules = [bf.Schedule([0.0, 0.4, 1.0])]
    common = dict(samples=40, grid_steps=10, shard_size=16, cache_dir=tmp_path / "pairs", storage_dtype=torch.float16,
                  progress=False)
    held = teacher_pairs(teacher, schedules, (2,), **common)
    streamed = teacher_pairs(teacher, schedules, (2,), stream=True, **common)
    assert isinstance(streamed.states, ShardedStates) and streamed.states.shape == tuple(held.states.shape)
    rows, states = torch.tensor([0, 39, 17, 16, 5]), torch.tensor([0, 2, 1, 2, 0])
    assert torch.equal(streamed.states[rows, states], held.states[rows, states])
    assert torch.equal(streamed.states[rows, -1], held.states[rows, -1])
    a, _ = straighten(teacher, held, steps=5, batch_size=8, progress=False)
    b, _ = straighten(teacher, streamed, steps=5, batch_size=8, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(BossflowError, match="give cache_dir"):
        teacher_pairs(teacher, schedules, (2,), samples=4, stream=True, progress=False)


# --- recipes: learned times, blend, hard steps, cosine decay, one student per budget -----------


def test_learned_times_start_at_the_schedule_and_train_with_the_weights(teacher, schedules, pairs):
    from bossflow.training.learned_times import LearnedTimes
    from bossflow.training.straighten import learned_schedule

    start = bf.custom_schedule([0.0, 0.45, 1.0], eval_times=[0.05, 0.5])
    times = LearnedTimes(start)
    dt, s = times.steps()
    np.testing.assert_allclose(dt.detach().numpy(), [0.45, 0.55], rtol=1e-6)
    np.testing.assert_allclose(s.detach().numpy(), [0.05, 0.5], rtol=1e-6)
    np.testing.assert_allclose(times.to_schedule().times, start.times, atol=1e-7)

    before = _rmse(teacher, schedules[2], teacher)
    student, record = straighten(teacher, pairs.select([2]), objective="rollout", learn_times=True, steps=150,
                                 batch_size=256, lr=1e-3, progress=False)
    learned = learned_schedule(record, method="learned")
    assert learned.nfe == 2 and learned.times[0] == 0.0 and learned.times[-1] == 1.0
    assert not np.allclose(learned.times, schedules[2].times, atol=1e-4)  # the times moved
    assert _rmse(student, learned, teacher) < 0.6 * before
    assert record["learn_times"] is True
    with pytest.raises(BossflowError, match="did not learn"):
        learned_schedule({"objective": "rollout"})


@pytest.mark.parametrize("settings, words", [
    ({"objective": "boss", "learn_times": True}, "rollout"),
    ({"objective": "rollout", "learn_times": True, "nfes": [2, 4]}, "one schedule"),
    ({"objective": "rollout", "step_sampling": "error"}, "boss objective"),
    ({"objective": "boss", "step_sampling": "hard"}, "step_sampling"),
    ({"objective": "boss", "lr_schedule": "linear"}, "lr_schedule"),
])
def test_recipe_settings_are_checked_before_training(teacher, pairs, settings, words):
    settings = dict(settings)
    data = pairs.select(settings.pop("nfes", [2]))
    with pytest.raises(BossflowError, match=words):
        straighten(teacher, data, steps=2, progress=False, **settings)


def test_blend_matches_every_step_of_the_rollout(teacher, schedules, pairs):
    before = _rmse(teacher, schedules[4], teacher)
    student, record = straighten(teacher, pairs.select([4]), objective="blend", steps=150, batch_size=256, lr=1e-3,
                                 progress=False)
    assert record["objective"] == "blend" and "after each" in record["objective_text"]
    assert _rmse(student, schedules[4], teacher) < 0.6 * before


def test_error_step_sampling_draws_the_hard_steps_more_often(teacher, pairs):
    from bossflow.training.batches import step_errors, weight_steps_by_error

    table = transition_table(pairs.select([4]))
    errors = step_errors(teacher, pairs.select([4]), table)
    assert errors.shape == (4,) and bool((errors > 0).all())
    weight_steps_by_error(table, errors)
    _, s_a, _, _ = boss_batch(pairs.select([4]), table, torch.Generator().manual_seed(0), 20000)
    starts = [0.0, 0.3, 0.55, 0.8]
    shares = np.array([float((s_a.double() - t).abs().lt(1e-6).double().mean()) for t in starts])
    np.testing.assert_allclose(shares, (errors / errors.sum()).numpy(), atol=0.02)


def test_cosine_decay_reaches_zero_and_is_a_resume_setting(tmp_path, teacher, pairs):
    from bossflow.training.loop import learning_rate_at

    assert learning_rate_at("constant", 0.1, 50, 100) == 0.1
    assert learning_rate_at("cosine", 0.1, 0, 100) == pytest.approx(0.1)
    assert learning_rate_at("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert learning_rate_at("cosine", 0.1, 100, 100) == pytest.approx(0.0, abs=1e-12)
    straighten(teacher, pairs, steps=4, batch_size=16, lr_schedule="cosine", out_dir=tmp_path, checkpoint_every=2,
               progress=False)
    with pytest.raises(BossflowError, match="lr_schedule"):
        straighten(teacher, pairs, steps=6, batch_size=16, out_dir=tmp_path, resume=True, progress=False)


def test_learned_times_resume_to_the_same_weights_and_times(tmp_path, teacher, pairs):
    common = dict(objective="rollout", learn_times=True, batch_size=32, lr=1e-3, lr_schedule="cosine", progress=False)
    whole, a = straighten(teacher, pairs.select([2]), steps=8, **common)

    def kill(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after the checkpoint of step 4
        straighten(teacher, pairs.select([2]), steps=8, out_dir=tmp_path, checkpoint_every=4, on_step=kill, **common)
    resumed, b = straighten(teacher, pairs.select([2]), steps=8, out_dir=tmp_path, resume=True, **common)
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    assert a["learned_schedule"] == b["learned_schedule"]


def test_cmd_straighten_trains_one_student_per_budget_with_learned_times(tmp_path, capsys, schedules):
    sched = _schedule_file(tmp_path, schedules)
    out = tmp_path / "boss"
    base = ["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--samples", "64",
            "--pair-solver", "euler", "--grid-steps", "20", "--quiet", "--threads", "1"]
    recipe = ["--objective", "rollout", "--learn-times", "--lr-schedule", "cosine", "--distance", "pseudo-huber"]
    assert main([*base, *recipe, "--steps", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "times learned" in printed and printed.count("wrote ") == 2
    for k in (2, 4):
        learned = bf.load_schedules(out / f"nfe-{k}" / "schedules.json")
        assert learned.keys() == {k} and learned[k].meta["method"] == "learned"
        assert learned[k].meta["learned_from"] == schedules[k].meta.get("method")
        config = json.loads((out / f"nfe-{k}" / "config.json").read_text())
        assert config["training"]["pairs"]["nfes"] == [k] and config["training"]["learn_times"] is True
    assert {"nfe-2", "nfe-4", "pairs"} <= {p.name for p in out.iterdir()}
    # A straightened folder samples along its own (learned) schedule when no --schedule is given.
    assert main(["sample", "--model", str(out / "nfe-4"), "--n", "8", "--out", str(tmp_path / "x.npz"), "--quiet"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npz")["times"], bf.load_schedules(out / "nfe-4" / "schedules.json")[4].times)
    assert main(["sample", "--model", "gmm-2d-teacher", "--n", "8", "--out", str(tmp_path / "y.npy"), "--quiet"]) == 2
    # --budgets mixed keeps one student in OUT; learned times need one schedule per student.
    assert main([*base, "--budgets", "mixed", "--steps", "5", "--out", str(tmp_path / "mixed")]) == 0
    assert bf.load_schedules(tmp_path / "mixed" / "schedules.json").keys() == {2, 4}
    assert main([*base, *recipe, "--budgets", "mixed", "--steps", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "--learn-times" in capsys.readouterr().err


@pytest.mark.parametrize("extra, learned", [([], True), (["--no-learn-times"], False),
                                             (["--objective", "boss"], False), (["--budgets", "mixed"], False)])
def test_cmd_straighten_learns_the_times_by_default_wherever_it_can(tmp_path, schedules, extra, learned):
    """The default recipe trains the times along with the weights; --no-learn-times, boss and mixed keep the searched ones."""
    sched = _schedule_file(tmp_path, schedules)
    out = tmp_path / "boss"
    assert main(["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--nfe", "2", "--samples", "32",
                 "--pair-solver", "euler", "--grid-steps", "10", "--steps", "3", "--quiet", "--threads", "1",
                 "--out", str(out), *extra]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["learn_times"] is learned and config["training"]["batch_size"] == 256
    written = bf.load_schedules(out / "schedules.json")[2]
    assert (written.meta["method"] == "learned") is learned
    if not learned:
        np.testing.assert_array_equal(written.times, schedules[2].times)


def test_cmd_straighten_chains_the_budgets_largest_first(tmp_path, capsys, schedules):
    """By default NFE 4 trains first from the teacher, then NFE 2 from the NFE-4 student; a rerun resumes both."""
    sched = _schedule_file(tmp_path, schedules)
    out = tmp_path / "boss"
    argv = ["straighten", "--model", "gmm-2d-teacher", "--schedule", str(sched), "--samples", "64",
            "--pair-solver", "euler", "--grid-steps", "20", "--steps", "6", "--batch-size", "16", "--quiet", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.index("along NFE 4") < printed.index("along NFE 2")
    four, two = ({**json.loads((out / f"nfe-{k}" / "config.json").read_text())["training"]} for k in (4, 2))
    assert "started_from" not in four and four["init_sha256"] is None
    assert two["started_from"] == str(out / "nfe-4")
    assert two["chain_wall_seconds"] == pytest.approx(two["wall_seconds"] + four["wall_seconds"], abs=0.2)
    four_model, _ = load_model_dir(out / "nfe-4")
    assert two["init_sha256"] == model_fingerprint(four_model)
    first = _weights(load_model_dir(out / "nfe-2")[0])
    assert main([*argv, "--resume"]) == 0
    assert all(torch.equal(v, first[k]) for k, v in load_model_dir(out / "nfe-2")[0].state_dict().items())
    # --budgets separate starts every student from the teacher.
    assert main([*argv[:-1], str(tmp_path / "separate"), "--budgets", "separate"]) == 0
    assert "started_from" not in json.loads((tmp_path / "separate" / "nfe-2" / "config.json").read_text())["training"]
