"""The README's quick sample output (``bossflow schedule --model gmm-2d``) is what the command prints now.

``tools/readme_outputs.py`` regenerates the samples (``--write``); this test runs its check on the
quick one, so that a change which alters what the command prints fails until the README is
regenerated. The pipeline samples' stable parts are checked by ``test_readme_pipeline.py``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import readme_outputs  # noqa: E402


def test_quick_sample_has_not_drifted():
    text = readme_outputs.README.read_text(encoding="utf-8")
    commands, (start, end) = readme_outputs._blocks(text, "## Command line")
    assert commands == ["bossflow schedule --model gmm-2d --nfe 2,4,6,8 --out schedules.json"]
    shown = text[start:end]
    assert "auto spent" in shown and "wrote 4 schedule(s)" in shown
    # The search's figures depend on the CPU's float rounding (the README's were printed on one CPU; another may
    # land a few thousandths apart): the test checks every line's shape and labels, `tools/readme_outputs.py` the figures.
    assert readme_outputs.drift(shown, readme_outputs.run_sample(commands, "quick", 0), numbers=False) == []


def test_drift_names_the_lines_that_changed_and_ignores_wall_times():
    shown = "auto spent 27.4 fine trajectories\nfirst batch: 0.39 ms per transformer call\nwrote 1 schedule(s)\n"
    printed = "auto spent 27.1 fine trajectories\nfirst batch: 0.52 ms per transformer call\nwrote 1 schedule(s)\n"
    assert readme_outputs.drift(shown, printed) == ["auto spent 27.4 fine trajectories"]
    assert readme_outputs.drift(shown, printed, numbers=False) == []
    assert readme_outputs.drift(shown, "auto spent 27.4 fine trajectories\nwrote 1 schedules\n", numbers=False) == [
        "wrote 1 schedule(s)"]
