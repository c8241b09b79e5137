import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bossflow as bf
from bossflow.cli import main

TESTS = Path(__file__).parent


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_end_to_end_console_script(tmp_path):
    out = tmp_path / "schedules.json"
    proc = subprocess.run(
        ["bossflow", "schedule", "--model", "gmm-2d", "--method", "bellman", "--nfe", "2,4,6,8", "--out", str(out), "--samples", "64", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NFE", "cost", "times"]
    assert [int(line.split()[0]) for line in lines[1:5]] == [2, 4, 6, 8]
    scheds = bf.load_schedules(out)
    assert list(scheds) == [2, 4, 6, 8]
    s4 = bf.Schedule.load(out, nfe=4)
    assert s4.meta["model"] == "gmm-2d" and s4.meta["samples"] == 64 and s4.meta["method"] == "bellman"
    # the printed times are the saved ones
    printed = [float(v) for v in lines[2].split()[2:]]
    np.testing.assert_allclose(printed, s4.times, atol=5e-5)


def test_schedule_matches_library(capsys, tmp_path):
    out = tmp_path / "s.json"
    code, _, _ = run(capsys, "schedule", "--model", "gmm-64d", "--method", "bellman", "--nfe", "3", "--samples", "16", "--grid-steps", "20",
                     "--dtype", "float64", "--out", str(out), "--quiet")
    assert code == 0
    model = bf.models.gmm_64d()
    grid = bf.uniform_schedule(20).times
    cost = bf.cost_matrix(model, bf.gaussian_noise(16, (64,), seed=0, dtype=__import__("torch").float64), grid)
    idx, total = bf.bellman_path(cost, 3)
    got = bf.Schedule.load(out)
    np.testing.assert_array_equal(got.times, grid[idx])
    assert got.meta["cost"] == pytest.approx(total, rel=1e-12)


def test_module_attribute_models_and_cache(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    cache = tmp_path / "cost.npz"
    args = ["schedule", "--method", "bellman", "--nfe", "2", "--samples", "8", "--grid-steps", "10", "--quiet", "--cache", str(cache)]
    assert run(capsys, *args, "--model", "user_models:make_flow")[0] == 0
    assert cache.exists()
    code, out, _ = run(capsys, *args, "--model", "user_models:make_flow")  # cache hit
    assert code == 0 and out.splitlines()[0].startswith("no --out") and out.splitlines()[2].startswith("   2")
    assert run(capsys, *args[:-2], "--model", "user_models:instance")[0] == 0
    assert run(capsys, *args[:-2], "--model", f"{TESTS / 'user_models.py'}:make_flow")[0] == 0
    assert run(capsys, *args[:-2], "--model", "user_models:velocity", "--shape", "4")[0] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no-such-preset"], "neither a preset"),
        (["--model", "no_such_module_xyz:f"], "cannot import module"),
        (["--model", "user_models:missing"], "has no attribute"),
        (["--model", "user_models:not_callable"], "not a callable"),
        (["--model", "user_models:broken_factory"], "weights missing"),
        (["--model", "user_models:velocity"], "pass --shape"),
        (["--model", "gmm-2d", "--nfe", "200"], "exceeds --grid-steps"),
        (["--model", "gmm-2d", "--device", "nodevice"], "not available"),
        (["--model", "gmm-2d", "--out", "/proc/forbidden/s.json"], "cannot create folder /proc/forbidden"),
        (["--model", "gmm-2d", "--out", "user_models.py/s.json"], "user_models.py is a file, not a folder"),
        (["--model", "gmm-2d", "--out", "."], "is a folder; give a file path"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, monkeypatch, argv, message):
    monkeypatch.chdir(TESTS)
    code, _, err = run(capsys, "schedule", "--samples", "4", "--grid-steps", "20", "--quiet", *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["schedule"], ["schedule", "--model", "gmm-2d", "--nfe", "a,b"], ["nope"]])
def test_argparse_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_mismatched_cache_is_refused(capsys, tmp_path):
    cache = tmp_path / "c.npz"
    base = ["schedule", "--method", "bellman", "--nfe", "2", "--samples", "4", "--grid-steps", "10", "--quiet", "--cache", str(cache)]
    assert run(capsys, *base, "--model", "gmm-2d")[0] == 0
    code, _, err = run(capsys, *base, "--model", "gmm-2d", "--seed", "3")
    assert code == 2 and "different noise" in err


def test_global_dp_method(capsys, tmp_path):
    out = tmp_path / "g.json"
    code, _, _ = run(capsys, "schedule", "--model", "gmm-2d", "--method", "global-dp", "--nfe", "2,3", "--samples", "16",
                     "--grid-steps", "12", "--out", str(out), "--quiet")
    assert code == 0
    s = bf.Schedule.load(out, nfe=3)
    assert s.meta["method"] == "global-dp" and s.meta["model"] == "gmm-2d" and s.meta["samples"] == 16
    code, _, err = run(capsys, "schedule", "--model", "gmm-2d", "--method", "global-dp", "--cache", str(tmp_path / "c.npz"))
    assert code == 2 and "--cache" in err


@pytest.mark.parametrize("method", ["refined", "olss", "gits"])
def test_every_search_through_the_cli(capsys, tmp_path, method):
    out = tmp_path / f"{method}.json"
    code, text, _ = run(capsys, "schedule", "--model", "gmm-2d", "--method", method, "--nfe", "2", "--samples", "16",
                        "--grid-steps", "12", "--out", str(out), "--quiet")
    assert code == 0
    s = bf.Schedule.load(out, nfe=2)
    assert s.meta["method"] == method and s.meta["model"] == "gmm-2d"
    if method == "refined":
        assert s.eval_times is not None and "evaluated at" in text
    code, _, err = run(capsys, "schedule", "--model", "gmm-2d", "--method", method, "--substeps", "2")
    assert code == 2 and "--substeps" in err


@pytest.mark.parametrize("method, bar", [("refined", "refined"), ("global-dp", "global-dp"), ("evolution", "evolution")])
def test_long_searches_show_a_progress_bar_that_ends_at_its_total(capsys, method, bar):
    argv = ["schedule", "--model", "gmm-2d", "--method", method, "--nfe", "2,3", "--samples", "16", "--grid-steps", "12"]
    code, _, err = run(capsys, *argv)
    assert code == 0
    # The last drawing of the bar: its count equals its total (the totals are not estimates).
    final = [line for line in err.replace("\r", "\n").splitlines() if line.startswith(f"{bar}:")][-1]
    done = re.search(r"\| (\d+)/(\d+) \[", final)
    assert done and done.group(1) == done.group(2), final
    code, _, err = run(capsys, *argv, "--quiet")
    assert code == 0 and err == ""


def test_baseline_method(capsys, tmp_path):
    out = tmp_path / "u.json"
    code, text, _ = run(capsys, "schedule", "--model", "gmm-2d", "--method", "uniform", "--nfe", "4", "--out", str(out))
    assert code == 0 and "0.2500" in text
    assert bf.Schedule.load(out).meta["method"] == "uniform"


def test_help_has_examples():
    proc = subprocess.run([sys.executable, "-m", "bossflow.cli", "schedule", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "examples:" in proc.stdout and "--nfe" in proc.stdout


def test_demo_quick(quick_demo):
    code, out, text = quick_demo  # the run tests/test_figures.py checks too
    assert code == 0 and "gmm-64d" in text
    report = json.loads((out / "report.json").read_text())
    methods = set(bf.search.SEARCHES)
    for name in ("gmm-2d", "gmm-64d"):
        rows = [r for r in report["rows"] if r["model"] == name]
        assert {(r["method"], r["nfe"]) for r in rows} == {(m, k) for m in methods for k in (2, 4, 6)}
        assert all(np.isfinite(r["rmse"]) and r["rmse"] > 0 and np.isfinite(r["w2"]) for r in rows)
        assert report["floors"][name]["w2"] > 0
    assert (out / "report.md").read_text().startswith("# bossflow demo")
    assert (out / "report.csv").read_text().splitlines()[0].startswith("model,method,nfe,rmse,w2")


def test_bench_command(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(TESTS)
    out = tmp_path / "bench"
    code, text, _ = run(capsys, "bench", "--models", "gmm-2d,user_models:make_flow", "--methods", "uniform,bellman",
                        "--nfe", "2-3", "--grid-steps", "12", "--search-samples", "16", "--eval-samples", "32",
                        "--out", str(out), "--quiet")
    assert code == 0 and "user_models:make_flow" in text
    report = json.loads((out / "bench.json").read_text())
    assert len(report["rows"]) == 2 * 2 * 2
    bellman = [r for r in report["rows"] if r["method"] == "bellman"]
    assert all(r["search_model_rows"] == 16 * 12 for r in bellman)  # one fine trajectory per search noise
    assert all(r["search_model_rows"] == 0 for r in report["rows"] if r["method"] == "uniform")
    assert len((out / "bench.csv").read_text().splitlines()) == 1 + 8
    code, _, _ = run(capsys, "bench", "--models", "gmm-2d", "--methods", "auto", "--effort", "fast", "--nfe", "2",
                     "--grid-steps", "12", "--search-samples", "16", "--eval-samples", "32", "--out", str(out), "--quiet")
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    (row,) = report["rows"]
    assert row["method"] == "auto" and row["search_model_rows"] > 0
    assert report["config"]["options"] == {"auto": {"effort": "fast"}}
    code, _, err = run(capsys, "bench", "--methods", "bellman", "--effort", "fast", "--out", str(out), "--quiet")
    assert code == 2 and "add auto to --methods" in err
    code, _, err = run(capsys, "bench", "--methods", "nope", "--out", str(out), "--quiet")
    assert code == 2 and "unknown method" in err
    code, _, err = run(capsys, "bench", "--nfe", "200", "--out", str(out), "--quiet")
    assert code == 2 and "every NFE" in err


def test_model_failure_is_one_line_exit_1(capsys, monkeypatch):
    monkeypatch.chdir(TESTS)
    code, _, err = run(capsys, "schedule", "--model", "user_models:wrong_shape", "--shape", "3", "--samples", "4",
                       "--grid-steps", "4", "--nfe", "2", "--quiet")
    assert code == 1 and "BOSSFLOW_DEBUG" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("BOSSFLOW_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["schedule", "--model", "user_models:wrong_shape", "--shape", "3", "--samples", "4", "--grid-steps", "4",
              "--nfe", "2", "--quiet"])


def test_sigterm_stops_a_long_job_like_ctrl_c_and_it_resumes(tmp_path):
    """A killed background job keeps its last checkpoint, says how to continue, and exits 130."""
    import signal
    import subprocess
    import time

    out = tmp_path / "teacher"
    cmd = [sys.executable, "-m", "bossflow.cli", "teacher", "gmm-2d", "--out", str(out), "--steps", "1000000",
           "--checkpoint-every", "5", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "checkpoint.safetensors").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert (out / "checkpoint.safetensors").exists() and not (out / "config.json").exists()


@pytest.mark.parametrize("argv, option", [
    (["schedule", "--model", "digits", "--out", "FILE/s.json"], "--out"),
    (["schedule", "--model", "digits", "--method", "bellman", "--cache", "FILE/c.npz"], "--cache"),
    (["straighten", "--model", "digits", "--schedule", "s.json", "--out", "FILE"], "--out"),
    (["straighten", "--model", "digits", "--schedule", "s.json", "--out", "DIR", "--pairs", "FILE"], "--pairs"),
    (["teacher", "digits", "--out", "FILE"], "--out"),
    (["demo", "--out", "FILE"], "--out"),
    (["bench", "--out", "FILE"], "--out"),
    (["evaluate", "--model", "digits", "--schedule", "s.json", "--out", "FILE"], "--out"),
    (["sample", "--model", "digits", "--out", "FILE/x.png"], "--out"),
    (["export", "s.json", "--out", "FILE/x.json"], "--out"),
])
def test_every_output_is_checked_before_any_work(tmp_path, capsys, argv, option):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    argv = [str(blocker) if a == "FILE" else str(blocker / a[5:]) if a.startswith("FILE/") else
            str(tmp_path / "out") if a == "DIR" else a for a in argv]
    started = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bossflow: error: {option} ") and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - started < 5  # refused before loading or searching anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created on the way


def test_times_print_with_enough_digits():
    from bossflow.cli._args import format_times

    assert format_times([0.0, 0.25, 1.0]) == "0.0000 0.2500 1.0000"
    assert format_times([0.0, 0.5, 0.99999]) == "0.0000 0.5000 0.99999"
    assert format_times([1e-6, 0.30001, 0.30004, 1.0]) == "0.000001 0.30001 0.30004 1.0000"
    for t in (0.99999, 1 - 1e-9, 1 - 2 ** -52, 1e-12):
        assert float(format_times([t])) == t or float(format_times([t])) not in (0.0, 1.0)


def test_schedule_table_number_column(capsys):
    from bossflow.cli.schedule import print_schedules

    auto = {k: bf.Schedule(np.linspace(0, 1, k + 1), method="refined-ls", selected="refined-ls",
                           holdout_rmse={"uniform": 0.5, "refined-ls": 0.01 * k}) for k in (2, 4)}
    print_schedules(auto)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NFE", "held-out", "RMSE", "times"]
    assert lines[1].split()[:2] == ["2", "2.0000e-02"] and lines[2].split()[:2] == ["4", "4.0000e-02"]
    print_schedules({2: bf.Schedule([0.0, 0.5, 1.0], method="uniform")})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NFE", "times"] and lines[1].split() == ["2", "0.0000", "0.5000", "1.0000"]
    print_schedules({2: bf.Schedule([0.0, 0.5, 1.0], cost=0.25), 3: bf.Schedule([0.0, 0.3, 0.6, 1.0])})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NFE", "cost", "times"] and lines[1].split()[1] == "2.5000e-01" and lines[2].split()[1] == "-"
