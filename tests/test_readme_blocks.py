"""Every ```` ```python ```` block of README.md and of the Markdown files under docs/, run as written.

The blocks of one file run in order in one namespace (a block may use what an earlier one
defined, as a reader who pastes them in turn would), in a fresh working directory, offline
(``HF_HUB_OFFLINE=1``) and on one thread. ``path/to/sd3-pipeline`` there is the tiny random
SD3 pipeline of ``tiny_pipelines.py``, which the README's diffusers examples load.

The blocks of the README sections "Your own diffusers pipeline (SD3, Flux)" and "Straighten
your pipeline into a LoRA" are skipped here: ``test_readme_pipeline.py`` runs them, after the
sections' commands that write the files they read, and checks what they print; no block runs twice.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("flow_matching")

from tiny_pipelines import make_sd3_pipeline  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIPPED_SECTIONS = ("## Your own diffusers pipeline", "## Straighten your pipeline into a LoRA")
"""Run by test_readme_pipeline.py."""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of each ```` ```python ```` block outside the skipped sections."""
    blocks, current, section = [], None, ""
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if current is None and line.startswith("## "):
            section = line
        elif line.startswith("```"):
            if current is None:
                current = (number + 1, [], line[3:].strip() == "python")
            else:
                start, lines, is_python = current
                if is_python and not section.startswith(SKIPPED_SECTIONS):
                    blocks.append((start, "".join(lines)))
                current = None
        elif current is not None:
            current[1].append(line)
    return blocks


@pytest.mark.parametrize("title, blocks", [(SKIPPED_SECTIONS[0], 2), (SKIPPED_SECTIONS[1], 1)])
def test_block_extraction_skips_the_pipeline_sections(title, blocks):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.index(title)
    end = text.index("\n## ", section + 1)
    first, last = text[:section].count("\n") + 1, text[:end].count("\n") + 1
    starts = [start for start, _ in python_blocks(text)]
    assert text[section:end].count("```python") == blocks
    assert text.count("```python") - len(starts) == 3  # both sections' blocks
    assert starts and not any(first < start < last for start in starts)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", [p for p in FILES if python_blocks(p.read_text(encoding="utf-8"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_as_written(path, workdir):
    text = path.read_text(encoding="utf-8")
    if "path/to/sd3-pipeline" in text:
        make_sd3_pipeline(workdir / "path" / "to" / "sd3-pipeline")
    namespace: dict = {"__name__": "__readme__"}
    for start, code in python_blocks(text):
        padded = "\n" * (start - 1) + code  # tracebacks point at the Markdown file's own lines
        exec(compile(padded, str(path), "exec"), namespace)  # noqa: S102 (the documentation's own code)
    if path.name == "README.md":  # the blocks ran to their ends
        assert (workdir / "sched4.json").is_file() and namespace["image"].size == (32, 32)
