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
