"""The README's "Your own diffusers pipeline" and "Straighten your pipeline into a LoRA" sections, run on the tiny SD3 pipeline.

The tests work in a folder where ``path/to/sd3-pipeline`` is the tiny random SD3 pipeline of
``tiny_pipelines.py``, ``prompts.txt`` holds six prompts and ``holdout.txt`` four others, run
every ``bossflow`` command of a section's bash blocks and then every Python block in order,
and check the stable parts of the printed sample output against the README. The LoRA
section's straightening command runs with ``--steps 40`` appended (2,000 steps take minutes):
its Python block, the announced pair calls and the sigmas do not depend on the steps.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from bossflow.cli import main  # noqa: E402

from tiny_pipelines import make_sd3_pipeline  # noqa: E402

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your own diffusers pipeline"
LORA_SECTION = "## Straighten your pipeline into a LoRA"
HOLDOUT = ["a horse in a field", "a small house at night", "a green river in the city", "a girl with a yellow flower"]
PROMPTS = ["a photo of a cat", "a red car on a street", "an old man with a dog",
           "a painting of a mountain at night", "a blue bird in a tree", "a portrait of a young woman"]


def _section(title: str = SECTION) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.index("\n## ", start + len(title))
    return text[start:end]


def _blocks(section: str, language: str) -> list[str]:
    """The fenced blocks opened with ```` ```language ```` (``""``: no language), in order."""
    blocks, current, opened = [], None, None
    for line in section.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, opened = [], line[3:].strip()
            else:
                if opened == language:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _commands(block: str) -> list[list[str]]:
    """The ``bossflow ...`` commands of a bash block, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True)[1:] for line in joined.splitlines() if line.startswith("bossflow ")]


def _schedule_rows(text: str) -> list[str]:
    """The ``NFE cost times`` rows, without the cost column (float rounding may differ across CPUs)."""
    rows = re.findall(r"^ +(\d+) +\S+ +((?:\d\.\d{4} ?)+)$", text, flags=re.M)
    return [f"{nfe} {times.strip()}" for nfe, times in rows]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_sd3_pipeline(tmp_path / "path" / "to" / "sd3-pipeline")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    (tmp_path / "holdout.txt").write_text("\n".join(HOLDOUT) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pipeline_section_runs_as_written(workdir, capsys):
    section = _section()
    commands = [c for block in _blocks(section, "bash") for c in _commands(block)]
    assert [c[0] for c in commands] == ["schedule", "export", "export"]
    printed = ""
    for argv in commands:
        assert main(argv) == 0, argv
        printed += capsys.readouterr().out
    sample = _blocks(section, "")[0]
    announced = [line for line in sample.splitlines() if line.startswith(("the search makes", "then the held-out"))]
    assert announced and all(line in printed for line in announced)
    assert _schedule_rows(printed) == _schedule_rows(sample) != []

    namespace: dict = {}
    for block in _blocks(section, "python"):
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (the README's own code)
    from bossflow import load_schedules
    from bossflow.adapters.export import export_schedule

    command_sigmas = export_schedule(load_schedules(workdir / "sd3-sigmas.json")[4], "diffusers")
    assert namespace["sigmas"] == pytest.approx(command_sigmas, abs=1e-6)  # "reproduces the command's sigmas"
    assert namespace["image"].size == (32, 32)
    assert (workdir / "sigmas.json").read_text().startswith("[1.0, ")

    comfy: dict = {}  # the custom node's __init__.py, and the node it registers, on the command's file
    exec(_blocks(section, "")[1], comfy)  # noqa: S102
    (node_sigmas,) = comfy["NODE_CLASS_MAPPINGS"]["BossflowSigmas"]().sigmas(str(workdir / "sd3-sigmas.json"), 4)
    assert node_sigmas.tolist() == pytest.approx(json.loads((workdir / "sigmas.json").read_text()))


def test_lora_section_runs_and_its_python_block_uses_the_lora(workdir, capsys):
    section = _section(LORA_SECTION)
    blocks = _blocks(section, "bash")
    commands = _commands(blocks[0])
    assert [c[0] for c in commands] == ["schedule", "straighten"] and "--lora" in _commands(blocks[1])[0]
    printed = ""
    for argv in commands:
        extra = ["--steps", "40"] if argv[0] == "straighten" else []
        assert main([*argv, *extra, "--quiet"]) == 0, argv
        printed += capsys.readouterr().out
    sample = _blocks(section, "")[0]
    stable = [line for line in sample.splitlines() if line.startswith(("teacher pairs:", "  pipe.load_lora_weights"))]
    stable += [line.split("   # ")[0] for line in sample.splitlines() if line.startswith("  image = pipe(")]
    assert len(stable) == 3 and all(line in printed for line in stable), stable

    namespace: dict = {}
    for block in _blocks(section, "python"):
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (the README's own code)
    assert namespace["image"].size == (32, 32)
    assert namespace["pipe"].get_list_adapters() == {"transformer": ["default_0"]}  # the LoRA is loaded
