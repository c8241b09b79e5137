"""Many processes give what one process gives: cost matrices, pair data, straightening, the CLI.

Two-process runs use gloo on the CPU, started with ``torch.multiprocessing.spawn`` (library
calls) or ``python -m torch.distributed.run`` (the ``bossflow`` command, as users launch it).
Each worker uses one torch thread; the flows are the exact 2-D mixture (float64) and the
shipped ``gmm-2d-teacher`` network, so every run takes a few seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import bossflow as bf
from bossflow import distributed as bd
from bossflow.checkpoints import load_model_dir, shipped_model_dir
from bossflow.cli import main
from bossflow.errors import BossflowError, CostMatrixError
from bossflow.models import gmm_2d
from bossflow.pairs import teacher_pairs
from bossflow.search.auto import auto_schedules
from bossflow.search.refine import refine_schedule
from conftest import Interrupting
from bossflow.straighten import CHECKPOINT_NAME, straighten

WORLD = 2
N_COST = 37  # odd: the last round splits unevenly, one rank gets fewer samples
COST_BATCH = 5
PAIR_SAMPLES, PAIR_SHARD = 45, 16
STEPS = 6
BATCH = 33  # odd: the ranks' shares of a batch differ in size
AUTO_SAMPLES = 41  # odd: the refinement's shares differ in size
AUTO_REFINE = {"screen_steps": 4, "steps": 6, "batch_size": 9}

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local: int, world: int, port: int, job: str, folder: str) -> None:
    os.environ.update(RANK=str(local), LOCAL_RANK=str(local), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert bd.init_from_env() and bd.world_size() == world and bd.rank() == local
    try:
        JOBS[job](Path(folder), local)
    finally:
        bd.shutdown()


def _spawn(job: str, folder: Path) -> None:
    mp.spawn(_worker, args=(WORLD, _free_port(), job, str(folder)), nprocs=WORLD, join=True)


def _teacher():
    return load_model_dir(shipped_model_dir("gmm-2d-teacher"))[0]


def _cost_setup():
    return gmm_2d(), bf.gaussian_noise(N_COST, (2,), seed=3, dtype=torch.float64), bf.uniform_schedule(20).times


def _schedules():
    return [bf.custom_schedule([0.0, 0.45, 1.0]), bf.custom_schedule([0.0, 0.3, 0.55, 0.8, 1.0])]


def _straighten(teacher, pairs, out=None, steps=STEPS, objective="boss", resume=False, micro_batch=None):
    student, record = straighten(teacher, pairs, objective=objective, steps=steps, batch_size=BATCH, lr=1e-3,
                                 ema_decay=0.9, seed=5, out_dir=out, checkpoint_every=2 if out else 0, resume=resume,
                                 micro_batch=micro_batch, progress=False)
    return {k: v.clone() for k, v in student.state_dict().items()}, record


# --- jobs run on every rank ----------------------------------------------------------------


def _job_cost(folder: Path, local: int) -> None:
    model, noise, grid = _cost_setup()
    full = bf.cost_matrix(model, noise, grid, batch_size=COST_BATCH)
    resumed = bf.cost_matrix(model, noise, grid, batch_size=COST_BATCH, checkpoint=folder / "partial.npz", model_id="m")
    np.savez(folder / f"cost-{local}.npz", full=full, resumed=resumed)


def _job_pairs(folder: Path, local: int) -> None:
    teacher = _teacher()
    cached = teacher_pairs(teacher, _schedules(), (2,), samples=PAIR_SAMPLES, seed=1, grid_steps=30,
                           batch_size=8, shard_size=PAIR_SHARD, cache_dir=folder / "pairs", progress=False)
    memory = teacher_pairs(teacher, _schedules(), (2,), samples=PAIR_SAMPLES, seed=1, grid_steps=30, batch_size=8,
                           progress=False)
    torch.save({"cached": cached.states, "memory": memory.states}, folder / f"pairs-{local}.pt")


def _job_straighten(folder: Path, local: int) -> None:
    teacher = _teacher()
    pairs = teacher_pairs(teacher, _schedules(), (2,), samples=64, seed=0, grid_steps=30, shard_size=32,
                          cache_dir=folder / "pairs", progress=False)  # made by the parent: read and shared by rank 0
    boss, record = _straighten(teacher, pairs, out=folder / "run")
    # Micro-batches on every rank (gradients all-reduced once, on the last one): still one process's step.
    rollout, _ = _straighten(teacher, pairs, steps=3, objective="rollout", micro_batch=3)
    torch.save({"boss": boss, "rollout": rollout, "losses": record["loss_curve"], "processes": record["processes"]},
               folder / f"straighten-{local}.pt")


def _auto_setup():
    return gmm_2d(), bf.gaussian_noise(AUTO_SAMPLES, (2,), seed=4, dtype=torch.float64), bf.uniform_schedule(20).times


def _auto(model, noise, grid):
    return auto_schedules(model, noise, grid, [2, 3], refine=AUTO_REFINE, continue_steps=8)


def _job_auto(folder: Path, local: int) -> None:
    model, noise, grid = _auto_setup()
    found = _auto(model, noise, grid)
    refined = refine_schedule(model, noise, bf.uniform_schedule(3), steps=10, screen_steps=4, batch_size=7)
    lstsq = refine_schedule(model, noise, bf.uniform_schedule(3), steps=10, screen_steps=4, batch_size=7, last_step="lstsq")
    torch.save({"auto": {k: s.to_dict() for k, s in found.items()}, "refined": refined.to_dict(), "lstsq": lstsq.to_dict()},
               folder / f"auto-{local}.pt")


JOBS = {"cost": _job_cost, "pairs": _job_pairs, "straighten": _job_straighten, "auto": _job_auto}


# --- helpers without a process group -------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_ranges_tile_the_items_in_rank_order(n, world):
    ranges = [bd.shard_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_helpers_are_single_process_no_ops():
    assert not bd.is_distributed() and bd.rank() == 0 and bd.world_size() == 1 and bd.is_main()
    assert not bd.init_from_env()  # WORLD_SIZE unset
    values = np.arange(3.0)
    reduced = bd.all_reduce_sum_float64(values)
    assert reduced.dtype == np.float64 and np.array_equal(reduced, values) and reduced is not values
    assert bd.on_main(lambda: 7) == 7
    t = torch.ones(2)
    assert bd.broadcast_tensor(t, src=0) is t
    bd.barrier()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert bd.pick_device("auto").type == expected and bd.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(BossflowError, match="not available"):
        bd.pick_device("nonsense")
    with pytest.raises(BossflowError):
        bd.shard_range(3, 2, 2)


def test_init_from_env_asks_for_the_rendezvous_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(BossflowError, match="torchrun"):
        bd.init_from_env()


def test_autocast_model_returns_the_state_dtype():
    torch.manual_seed(0)
    net = bf.VelocityMLP(dim=2)
    model = bd.Autocast(net)
    x, t = bf.gaussian_noise(64, (2,)), torch.full((64,), 0.5)
    v = model(x, t)
    assert v.dtype == torch.float32 and v.shape == x.shape
    with torch.no_grad():
        exact = net(x, t)
    assert not torch.equal(v, exact)  # the matmuls did run in bfloat16
    torch.testing.assert_close(v.detach(), exact, rtol=0.05, atol=0.05)


def test_schedule_command_takes_device_auto_and_bf16(tmp_path):
    args = ["schedule", "--model", "gmm-2d", "--method", "bellman", "--nfe", "2", "--samples", "16", "--grid-steps", "10", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "cpu.json")]) == 0
    assert main([*args, "--device", "auto", "--out", str(tmp_path / "auto.json")]) == 0
    if not torch.cuda.is_available():
        assert (tmp_path / "auto.json").read_text() == (tmp_path / "cpu.json").read_text()
    assert main([*args, "--precision", "bf16", "--cache", str(tmp_path / "c.npz"), "--out", str(tmp_path / "bf16.json")]) == 0
    doc = json.loads((tmp_path / "bf16.json").read_text())
    assert doc["provenance"]["precision"] == "bf16" and len(doc["schedules"]) == 1
    # the bf16 cost matrix is cached under its own model id: an fp32 run refuses it
    assert main([*args, "--cache", str(tmp_path / "c.npz")]) == 2


# --- two processes -------------------------------------------------------------------------


def test_cost_matrix_on_two_processes_equals_one_process(tmp_path):
    model, noise, grid = _cost_setup()
    single = bf.cost_matrix(model, noise, grid, batch_size=COST_BATCH)
    # A one-process run interrupted after two batches leaves a checkpoint the two processes resume.
    with pytest.raises(KeyboardInterrupt):
        bf.cost_matrix(Interrupting(limit=45), noise, grid, batch_size=COST_BATCH, checkpoint=tmp_path / "partial.npz",
                       model_id="m")
    _spawn("cost", tmp_path)
    upper = np.triu_indices(grid.size, 1)
    scale = np.abs(single[upper]).max()
    for local in range(WORLD):
        with np.load(tmp_path / f"cost-{local}.npz") as got:
            for name in ("full", "resumed"):
                assert np.array_equal(np.isinf(got[name]), np.isinf(single))
                np.testing.assert_allclose(got[name][upper], single[upper], rtol=1e-9, atol=1e-12 * scale)
    loaded, meta = bf.load_cost_matrix(tmp_path / "partial.npz")  # rank 0 finished the file
    assert meta["complete"] and meta["n_samples"] == N_COST
    np.testing.assert_allclose(loaded[upper], single[upper], rtol=1e-9, atol=1e-12 * scale)
    with pytest.raises(CostMatrixError, match="different model"):
        bf.cost_matrix(model, noise, grid, checkpoint=tmp_path / "partial.npz", model_id="other")


def test_pairs_on_two_processes_equal_one_process_and_fill_one_cache(tmp_path):
    teacher = _teacher()
    kwargs = dict(seed=1, grid_steps=30, batch_size=8, shard_size=PAIR_SHARD, progress=False)
    single = teacher_pairs(teacher, _schedules(), (2,), samples=PAIR_SAMPLES, **kwargs)
    # The cache starts with one shard; the two processes read it and make the two others.
    teacher_pairs(teacher, _schedules(), (2,), samples=PAIR_SHARD, cache_dir=tmp_path / "pairs", **kwargs)
    _spawn("pairs", tmp_path)
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == [
        "meta.json", "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    reread = teacher_pairs(teacher, _schedules(), (2,), samples=PAIR_SAMPLES, cache_dir=tmp_path / "pairs", **kwargs)
    for local in range(WORLD):
        got = torch.load(tmp_path / f"pairs-{local}.pt", weights_only=True)
        assert torch.equal(got["cached"], reread.states)
        # Other batch compositions than one process's: float32 rounding along 30 Euler steps apart.
        torch.testing.assert_close(got["cached"], single.states, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got["memory"], single.states, rtol=1e-5, atol=1e-5)


def test_straightening_on_two_processes_equals_one_process_and_resumes_on_one(tmp_path):
    teacher = _teacher()
    pairs = teacher_pairs(teacher, _schedules(), (2,), samples=64, seed=0, grid_steps=30, shard_size=32,
                          cache_dir=tmp_path / "pairs", progress=False)
    single, record = _straighten(teacher, pairs)
    single_rollout, _ = _straighten(teacher, pairs, steps=3, objective="rollout")
    longer, _ = _straighten(teacher, pairs, steps=STEPS + 2)
    _spawn("straighten", tmp_path)
    moved = 0.0
    for local in range(WORLD):
        got = torch.load(tmp_path / f"straighten-{local}.pt", weights_only=True)
        assert got["processes"] == WORLD
        for name, value in single.items():
            torch.testing.assert_close(got["boss"][name], value, rtol=0, atol=1e-6)
            moved = max(moved, float((value - teacher.state_dict()[name]).abs().max()))
        for name, value in single_rollout.items():
            torch.testing.assert_close(got["rollout"][name], value, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(got["losses"]), np.asarray(record["loss_curve"]), rtol=1e-5)
    assert moved > 1e-3  # the runs did train
    # The checkpoint the two processes wrote (rank 0, at step 6) resumes on one process.
    assert (tmp_path / "run" / CHECKPOINT_NAME).exists()
    resumed, record = _straighten(teacher, pairs, out=tmp_path / "run", steps=STEPS + 2, resume=True)
    assert record["processes"] == 1
    for name, value in longer.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master-addr",
           "127.0.0.1", "--master-port", str(_free_port()), "-m", "bossflow.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_refinement_and_auto_on_two_processes_equal_one_process(tmp_path):
    model, noise, grid = _auto_setup()
    single = _auto(model, noise, grid)
    single_refined = refine_schedule(model, noise, bf.uniform_schedule(3), steps=10, screen_steps=4, batch_size=7)
    single_lstsq = refine_schedule(model, noise, bf.uniform_schedule(3), steps=10, screen_steps=4, batch_size=7,
                                   last_step="lstsq")
    _spawn("auto", tmp_path)
    for local in range(WORLD):
        got = torch.load(tmp_path / f"auto-{local}.pt")
        pairs = [(single[k], bf.Schedule.from_dict(got["auto"][k])) for k in (2, 3)]
        pairs.append((single_refined, bf.Schedule.from_dict(got["refined"])))
        pairs.append((single_lstsq, bf.Schedule.from_dict(got["lstsq"])))
        for one, many in pairs:
            # The ranks split each evaluation's chunks and add their sums in one process's order.
            assert np.array_equal(many.times, one.times) and np.array_equal(many.eval_times, one.eval_times)
            key = "selected" if "selected" in one.meta else "loss"
            assert many.meta[key] == one.meta[key]
            assert many.meta["backward_rows"] == one.meta["backward_rows"]  # summed over the ranks
            assert many.meta.get("olss") == one.meta.get("olss")  # a least-squares last step: the same coefficients
        # Every process solved the teacher and ran the cheap searches: twice the forward rows of those.
        assert got["refined"]["meta"]["teacher_rows"] == WORLD * single_refined.meta["teacher_rows"]
        assert single[2].meta["model_rows"] < bf.Schedule.from_dict(got["auto"][2]).meta["model_rows"]


def test_schedule_command_under_torchrun_writes_the_plain_runs_schedule(tmp_path, capsys):
    args = ["schedule", "--model", "gmm-2d", "--method", "bellman", "--nfe", "2,4", "--samples", str(N_COST), "--grid-steps", "20",
            "--batch-size", "8", "--dtype", "float64", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "plain.json")]) == 0
    capsys.readouterr()
    run = _torchrun([*args, "--out", str(tmp_path / "multi.json")], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote 2 schedule(s)") == 1  # rank 0 alone prints
    plain = json.loads((tmp_path / "plain.json").read_text())
    multi = json.loads((tmp_path / "multi.json").read_text())
    assert len(plain["schedules"]) == len(multi["schedules"]) == 2
    for a, b in zip(plain["schedules"], multi["schedules"]):
        assert a["times"] == b["times"]
        assert b["meta"].pop("cost") == pytest.approx(a["meta"].pop("cost"), rel=1e-9)
        assert a == b
    strip = lambda doc: {k: v for k, v in doc.items() if k != "schedules"}
    assert strip(plain) == strip(multi)


def test_auto_schedule_command_under_torchrun_matches_the_plain_run(tmp_path, capsys):
    """The default search under torchrun: rank 0 alone prints and writes; the refinement splits its noises."""
    args = ["schedule", "--model", "gmm-2d", "--nfe", "2", "--samples", str(AUTO_SAMPLES), "--grid-steps", "20",
            "--dtype", "float64", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "plain.json")]) == 0
    capsys.readouterr()
    run = _torchrun([*args, "--out", str(tmp_path / "multi.json")], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("auto spent") == 1 and run.stdout.count("wrote 1 schedule(s)") == 1
    plain = bf.load_schedules(tmp_path / "plain.json")[2]
    multi = bf.load_schedules(tmp_path / "multi.json")[2]
    # One chunk per process changes only the order of float64 additions: at 2 NFE, nothing visible.
    np.testing.assert_allclose(multi.times, plain.times, rtol=0, atol=1e-9)
    np.testing.assert_allclose(multi.evaluation_times, plain.evaluation_times, rtol=0, atol=1e-9)
    assert multi.meta["selected"] == plain.meta["selected"]
    # Both processes solved the teacher: the summed count is larger than one process's.
    assert multi.meta["model_rows"] > plain.meta["model_rows"]


def test_straighten_command_under_torchrun_writes_the_plain_runs_model(tmp_path, capsys):
    from bossflow.checkpoints import load_model_dir as load

    schedule = tmp_path / "sched.json"
    bf.save_schedules(schedule, _schedules())
    args = ["straighten", "--model", "gmm-2d-teacher", "--schedule", str(schedule), "--steps", "4", "--samples", "48",
            "--batch-size", "15", "--pair-solver", "euler", "--grid-steps", "20", "--lr", "1e-3", "--checkpoint-every", "2",
            "--budgets", "mixed", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    run = _torchrun([*args, "--out", str(tmp_path / "multi")], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("straightened gmm-2d-teacher") == 1  # rank 0 alone prints and writes
    plain, _ = load(tmp_path / "plain")
    multi, config = load(tmp_path / "multi")
    assert config["training"]["processes"] == WORLD
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(multi.state_dict()[name], value, rtol=0, atol=1e-5)
