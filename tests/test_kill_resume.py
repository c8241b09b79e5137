"""Killed runs resume: SIGKILL at a seeded random moment after a run's first saved progress, then the same
command (with --resume where it takes one) reaches what an uninterrupted run reaches; two runs on one cache.

Each command runs in its own process (``python -m bossflow.cli``, one thread, so that the rerun's
arithmetic is the uninterrupted run's); the kill lands a random 0-0.3 s after the file that shows
progress (the cost-matrix cache, a checkpoint) first appears, so it interrupts real work.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bossflow.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
RNG = random.Random(20)


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bossflow.cli", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _kill_after(argv: list[str], progress: Path, timeout: float = 120.0) -> bool:
    """Start ``bossflow argv``, SIGKILL it a random 0-0.3 s after ``progress`` exists; whether it was killed mid-run."""
    proc = _start(argv)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not progress.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(RNG.uniform(0.0, 0.3))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def _run(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "bossflow.cli", *argv], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bellman_cache_killed_then_rerun_gives_the_uninterrupted_schedules(tmp_path):
    argv = ["schedule", "--model", "digits", "--method", "bellman", "--nfe", "2,4", "--samples", "192", "--grid-steps",
            "60", "--batch-size", "16", "--quiet"]
    _run([*argv, "--out", str(tmp_path / "whole.json")])
    cache = tmp_path / "cost.npz"
    assert _kill_after([*argv, "--cache", str(cache), "--out", str(tmp_path / "killed.json")], cache)
    assert not (tmp_path / "killed.json").exists()
    _run([*argv, "--cache", str(cache), "--out", str(tmp_path / "killed.json")])
    whole, resumed = (json.loads((tmp_path / f"{n}.json").read_text())["schedules"] for n in ("whole", "killed"))
    assert [s["times"] for s in whole] == [s["times"] for s in resumed]


@pytest.mark.slow  # in-process: tests/test_search_auto.py::test_auto_journal_resumes_after_interruptions_...
def test_auto_journal_killed_then_rerun_gives_the_uninterrupted_schedules_and_cost(tmp_path):
    argv = ["schedule", "--model", "digits", "--nfe", "2,4", "--samples", "32", "--grid-steps", "20", "--effort", "fast",
            "--quiet"]
    _run([*argv, "--out", str(tmp_path / "whole.json")])
    journal = tmp_path / "auto.safetensors"
    killed = [*argv, "--cache", str(journal), "--out", str(tmp_path / "killed.json")]
    assert _kill_after(killed, journal)  # the journal appears once the teacher is solved
    assert not (tmp_path / "killed.json").exists()
    _run(killed)
    whole, resumed = (json.loads((tmp_path / f"{n}.json").read_text())["schedules"] for n in ("whole", "killed"))
    for a, b in zip(whole, resumed):
        assert (a["times"], a.get("eval_times"), a["meta"]["selected"]) == (b["times"], b.get("eval_times"), b["meta"]["selected"])
        assert a["meta"]["model_rows"] == b["meta"]["model_rows"]  # nothing saved was computed again


TRAINING_RUNS = {
    "straighten": ["straighten", "--model", "digits", "--schedule", "uniform", "--nfe", "2", "--samples", "128",
                   "--pair-solver", "euler", "--grid-steps", "50", "--steps", "40", "--batch-size", "32",
                   "--checkpoint-every", "5", "--threads", "1", "--quiet"],
    "teacher": ["teacher", "gmm-2d", "--steps", "300", "--batch-size", "256", "--checkpoint-every", "20", "--threads", "1",
                "--quiet"],
}


@pytest.mark.parametrize("command", [
    "straighten",
    pytest.param("teacher", marks=pytest.mark.slow),  # in-process: tests/test_teachers.py::test_resume_after_a_kill_...
])
def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, command):
    argv = TRAINING_RUNS[command]
    if command == "straighten":  # the three runs share the pairs (made by the first), so the kill lands in training
        argv = [*argv, "--pairs", str(tmp_path / "pairs")]
    _run([*argv, "--out", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    assert _kill_after([*argv, "--out", str(killed)], killed / "checkpoint.safetensors")
    assert not (killed / "model.safetensors").exists()
    _run([*argv, "--out", str(killed), "--resume"])
    assert _same_weights(tmp_path / "whole", killed)


def test_a_second_run_on_a_cache_in_use_stops_with_one_line_and_the_cache_stays_whole(tmp_path, capsys):
    cache = tmp_path / "cost.npz"
    argv = ["schedule", "--model", "digits", "--method", "bellman", "--nfe", "2", "--samples", "256", "--grid-steps", "80",
            "--batch-size", "8", "--quiet", "--cache", str(cache)]
    first = _start(argv)
    try:
        deadline = time.monotonic() + 60
        while not cache.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended before the second could start"
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another run is writing the cost-matrix cache" in err, err
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()[-2000:]
    assert main([*argv[:-2], "--cache", str(cache), "--out", str(tmp_path / "s.json")]) == 0  # finished: read, not redone


def test_a_pairs_folder_in_use_is_refused(tmp_path):
    from bossflow.core._io import exclusive
    from bossflow.core.errors import BossflowError

    folder = tmp_path / "pairs"
    with exclusive(folder, "pairs folder"):
        with pytest.raises(BossflowError, match="another run is writing the pairs folder"):
            with exclusive(folder, "pairs folder"):
                pass
    with exclusive(folder, "pairs folder"):  # released: usable again
        pass
