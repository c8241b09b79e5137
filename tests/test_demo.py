"""The demo's report text, progress plan and figure styles, without running the demo."""

from __future__ import annotations

import pytest

from bossflow.evaluation import demo
from bossflow.evaluation.demo import bold_best, format_report, format_summary


def _report(w2: dict[str, float], floor: float) -> dict:
    rows = [{"model": "gmm-2d", "method": m, "nfe": 2, "rmse": 0.1 * (i + 1), "w2": v, "mmd2": None, "fd": None,
             "search_seconds": 1.0, "search_model_rows": 10} for i, (m, v) in enumerate(w2.items())]
    return {"rows": rows, "floors": {"gmm-2d": {"rmse": 0.0, "w2": floor, "mmd2": None, "fd": None, "nfe_spent": 100}},
            "info": {"gmm-2d": {"samples": 10, "data": "d", "reference": "r"}}, "seconds": 1.0}


def test_bold_best_without_floor_bolds_the_least():
    assert bold_best([0.3, 0.1, 0.2]) == {1}
    assert bold_best([0.3, 0.1, 0.1], floor=0.0) == {1, 2}
    assert bold_best([None, None]) == set()


def test_bold_best_bolds_only_wins_beyond_the_floor():
    assert bold_best([0.04, 0.05, 0.5], floor=0.06) == set()  # both below the floor: a tie
    assert bold_best([0.04, 0.30, 0.5], floor=0.06) == {0}
    assert bold_best([0.20, 0.25, 0.5], floor=0.06) == set()  # within the floor of each other
    assert bold_best([0.20, 0.27, None], floor=0.06) == {0}


def test_summary_and_tables_do_not_bold_values_within_the_floor():
    tie = _report({"uniform": 0.05, "bellman": 0.06}, floor=0.07)
    assert "**" not in format_summary(tie, "distance")
    assert "**0.1**" in format_summary(tie, "rmse")  # RMSE has no floor: the least is bold
    w2_table = format_report(tie).split("### gmm-2d: Wasserstein-2")[1].split("###")[0]
    assert "0.05" in w2_table and "**" not in w2_table
    win = _report({"uniform": 0.5, "bellman": 0.06}, floor=0.07)
    assert "**0.06**" in format_summary(win, "distance") and "**0.5**" not in format_summary(win, "distance")


def test_every_method_has_its_own_colour_and_marker():
    from bossflow.evaluation.figures import method_style
    from bossflow.search import SEARCHES

    names = [*SEARCHES, demo.STRAIGHTENED]
    styles = {m: method_style(m) for m in names}
    assert len({s["color"] for s in styles.values()}) == len(names)
    assert len({s["marker"] for s in styles.values()}) == len(names)
    assert styles["uniform"]["color"] != styles["auto"]["color"] and styles["uniform"]["marker"] != styles["auto"]["marker"]
    assert all(s["color"] not in ("black", "#000000") for s in styles.values())  # black: the reference solver
    assert method_style("my-search") == method_style("my-search")


class _FakeBar:
    """Records what the demo's progress bar was told."""

    made: list["_FakeBar"] = []

    def __init__(self, iterable=None, total=None, desc=None, **kwargs):
        self.total, self.n, self.totals, self.postfixes, self.desc = total, 0, [total], [], desc
        _FakeBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, *args, **kwargs):
        pass

    def update(self, n=1):
        self.n += n
        self.totals.append(self.total)

    def set_postfix_str(self, text, refresh=True):
        self.postfixes.append(text)

    def refresh(self):
        self.totals.append(self.total)

    def close(self):
        self.totals.append(self.total)


def _tiny_plan(quick=False):
    return [demo.DemoModel("gmm-2d", ("uniform", "bellman"), (2, 4), grid_steps=8, search_samples=8, eval_samples=20,
                           seconds={"bellman": 3.0}),
            demo.DemoModel("digits", ("uniform",), (2,), grid_steps=4, search_samples=4, eval_samples=4,
                           students=("digits-boss-2",))]


def test_demo_stages_are_planned_up_front():
    shapes = {"gmm-2d": (2,), "digits": (1, 8, 8)}
    stages = demo.demo_stages(_tiny_plan(), shapes)
    assert stages[:3] == [("gmm-2d: reference", 10), ("gmm-2d: uniform", 10), ("gmm-2d: bellman", 30)]
    assert [label for label, _ in stages[3:6]] == ["digits: reference", "digits: uniform", "digits: digits-boss-2"]
    assert [label for label, _ in stages[6:]] == [f"figure {n}" for n in demo.planned_figures(_tiny_plan(), shapes)]
    assert demo.planned_figures(_tiny_plan(), shapes) == [
        "schedules-gmm-2d.png", "schedules-digits.png", "error-vs-nfe.png", "cost-matrices.png",
        "scatter-gmm-2d-nfe2.png", "scatter-gmm-2d-nfe4.png", "samples-digits.png"]
    assert [label for label, _ in demo.demo_stages(_tiny_plan(), shapes, figures=False)] == [label for label, _ in stages[:6]]
    full = demo.demo_plan()
    assert {label for label, _ in demo.demo_stages(full, {"gmm-2d": (2,), "gmm-64d": (64,), "digits": (1, 8, 8)})} >= {
        "gmm-64d: refined", "digits: auto", "figure samples-digits.png"}


def test_demo_progress_total_never_changes(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    import tqdm.auto

    monkeypatch.setattr(demo, "demo_plan", _tiny_plan)
    monkeypatch.setattr(tqdm.auto, "tqdm", _FakeBar)
    _FakeBar.made.clear()
    report = demo.run_demo(tmp_path, progress=True)
    (bar,) = [b for b in _FakeBar.made if b.desc == "demo"]
    stages = demo.demo_stages(_tiny_plan(), {"gmm-2d": (2,), "digits": (1, 8, 8)})
    assert set(bar.totals) == {sum(w for _, w in stages)} and bar.n == bar.total
    assert bar.postfixes == [label for label, _ in stages] + ["done"]  # each stage named as it starts
    assert report["figures"] == demo.planned_figures(_tiny_plan(), {"gmm-2d": (2,), "digits": (1, 8, 8)})


def test_demo_threads(monkeypatch, tmp_path):
    import torch

    with pytest.raises(demo.BossflowError, match="threads"):
        demo.run_demo(tmp_path, threads=0)
    before = torch.get_num_threads()
    monkeypatch.setattr(demo, "demo_plan", lambda quick=False: _tiny_plan()[:1])
    monkeypatch.setattr(importlib_util(), "find_spec", lambda name, *a: None)  # no figures: faster
    report = demo.run_demo(tmp_path, progress=False, threads=1)
    assert report["threads"] == 1 and torch.get_num_threads() == before


def importlib_util():
    import importlib.util

    return importlib.util


def test_gain_over_the_schedule_alone_is_stated_honestly():
    rows = [{"model": "digits", "method": "bellman", "nfe": 2, "fd": 40.0, "rmse": 0.3},
            {"model": "digits", "method": "auto", "nfe": 2, "fd": 8.0, "rmse": 0.2},
            {"model": "digits", "method": demo.STRAIGHTENED, "nfe": 2, "fd": 2.0, "rmse": 0.08},
            {"model": "digits", "method": "auto", "nfe": 4, "fd": 3.0, "rmse": 0.1},
            {"model": "digits", "method": demo.STRAIGHTENED, "nfe": 4, "fd": 3.3, "rmse": 0.07}]
    lines = demo.format_gain({"rows": rows})
    assert lines[0] == "## Straightening: gain over the best schedule alone"
    assert "| digits | 2 | FD | 2 | auto: 8 | 4.00× lower |" in lines
    assert "| digits | 4 | FD | 3.3 | auto: 3 | no gain |" in lines  # worse than the schedule alone: said so
    assert demo.format_gain({"rows": rows[:2]}) == []
