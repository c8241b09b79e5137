"""`bossflow demo --quick`: the report, every method and budget, and figures that decode."""

import json
import sys

import numpy as np
import pytest

from bossflow.demo import STRAIGHTENED, demo_plan
from bossflow.errors import BossflowError


@pytest.fixture
def demo(quick_demo):
    code, out, _ = quick_demo
    return code, out


def test_demo_quick_report_has_every_method_and_budget(demo, capsys):
    code, out = demo
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for plan in demo_plan(quick=True):
        rows = [r for r in report["rows"] if r["model"] == plan.name]
        expected = [(m, k) for m in plan.methods for k in plan.nfes]
        expected += [(STRAIGHTENED, int(name[-1])) for name in plan.students]  # digits-boss-K: its own schedule
        assert sorted((r["method"], r["nfe"]) for r in rows) == sorted(expected)
        keys = ("rmse", "w2", "mmd2", "nfe_spent", "sample_seconds", "search_seconds") + (("fd",) if plan.name == "digits" else ())
        for r in rows:
            assert all(np.isfinite(r[k]) for k in keys), r
            assert r["rmse"] > 0 and r["nfe_spent"] == r["nfe"] and len(r["times"]) == r["nfe"] + 1
        floor = report["floors"][plan.name]
        assert floor["w2"] > 0 and floor["nfe_spent"] > max(plan.nfes)
    assert report["floors"]["digits"]["fd"] > 0 and report["floors"]["gmm-2d"]["fd"] is None
    # The shipped straightened student beats the teacher's Bellman schedule at every budget it was made for.
    digits = {(r["method"], r["nfe"]): r["rmse"] for r in report["rows"] if r["model"] == "digits"}
    for k in (2, 4):
        assert digits[(STRAIGHTENED, k)] < digits[("bellman", k)]
    md = (out / "report.md").read_text()
    assert md.startswith("# bossflow demo") and "## Summary: endpoint RMSE" in md
    gain = md.split("## Straightening: gain over the best schedule alone")[1].split("##")[0]
    for k in (2, 4):  # one line per straightened budget, its FD beside the best teacher schedule's
        assert f"| digits | {k} | FD |" in gain
    for name in report["figures"]:
        assert f"]({name})" in md
    assert (out / "report.csv").read_text().splitlines()[0].startswith("model,method,nfe,rmse,w2,w2_kind,mmd2,fd")


def test_demo_quick_figures_decode(demo):
    matplotlib_image = pytest.importorskip("matplotlib.image")

    _, out = demo
    report = json.loads((out / "report.json").read_text())
    expected = {"error-vs-nfe.png", "cost-matrices.png", "scatter-gmm-2d-nfe2.png", "scatter-gmm-2d-nfe4.png",
                "samples-digits.png", "schedules-gmm-2d.png", "schedules-gmm-64d.png", "schedules-digits.png"}
    assert set(report["figures"]) == expected
    for name in expected:
        path = out / name
        assert path.stat().st_size > 15_000, name
        image = matplotlib_image.imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 150, name
        assert image[..., :3].std() > 0.05, name  # not a blank canvas


def test_figures_need_matplotlib(monkeypatch, tmp_path):
    from bossflow import figures

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rows = [{"model": "m", "method": "uniform", "nfe": 2, "times": [0.0, 0.5, 1.0]}]
    with pytest.raises(BossflowError, match="pip install matplotlib"):
        figures.plot_schedules(rows, "m", [2], tmp_path / "s.png")


def test_figure_inputs_are_checked(tmp_path):
    pytest.importorskip("matplotlib")
    from bossflow import figures

    rows = [{"model": "m", "method": "uniform", "nfe": 2, "times": [0.0, 0.5, 1.0]}]
    with pytest.raises(BossflowError, match="no schedules"):
        figures.plot_schedules(rows, "m", [3], tmp_path / "s.png")
    with pytest.raises(BossflowError, match="no positive finite entry"):
        figures.plot_cost_matrices({"m": (np.full((3, 3), np.inf), {})}, tmp_path / "c.png")


def test_demo_without_matplotlib_or_scikit_learn(monkeypatch, tmp_path):
    """Without matplotlib the numbers are still written; without scikit-learn the digits still run (shipped data)."""
    import importlib.util

    from bossflow import demo as demo_module
    from bossflow.data import digits

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    digits._arrays.cache_clear()
    tiny = [demo_module.DemoModel("gmm-2d", ("uniform", "bellman"), (2,), grid_steps=8, search_samples=8, eval_samples=20),
            demo_module.DemoModel("digits", ("uniform",), (2,), grid_steps=4, search_samples=4, eval_samples=4)]
    monkeypatch.setattr(demo_module, "demo_plan", lambda quick=False: tiny)
    report = demo_module.run_demo(tmp_path, progress=False)
    assert report["figures"] == [] and {r["model"] for r in report["rows"]} == {"gmm-2d", "digits"}
    assert any(r["fd"] is not None for r in report["rows"] if r["model"] == "digits")
    md = (tmp_path / "report.md").read_text()
    assert "pip install matplotlib" in md and "pip install scikit-learn" not in md
    assert not list(tmp_path.glob("*.png"))
