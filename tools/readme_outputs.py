"""Regenerate the README's sample outputs from the commands that print them, or check that they have not drifted.

A sample output is the plain fenced block that follows a ```` ```bash ```` block of ``bossflow``
commands under one of the headings of :data:`SAMPLES`. Each sample's commands run here, in a
temporary folder laid out as the README assumes (the tests' tiny SD3 pipeline at
``path/to/sd3-pipeline``, the prompt files), on one torch thread, offline; their printed lines
replace the block (``--write``) or are compared with it (the default, ``--check``): every line
but the timing ones (:data:`UNSTABLE`) must be what the command prints now.

    python tools/readme_outputs.py                 # check the quick sample (schedule on gmm-2d)
    python tools/readme_outputs.py --write --all   # regenerate every sample (the LoRA one takes minutes)

``tests/test_readme_outputs.py`` runs the check of the quick sample.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SAMPLES = {
    "## Command line": ("quick", 0),
    "## Your own diffusers pipeline": ("pipeline", 0),
    "## Straighten your pipeline into a LoRA": ("pipeline", 1),
}
"""Section heading -> (kind, which command of its bash block prints the sample; the ones before it run first).
``quick`` samples run in seconds; ``pipeline`` ones need the tiny pipeline (the LoRA one, minutes)."""

UNSTABLE = re.compile(r"first batch:|\d+ s\b|\d+ s,|ms per")
"""Lines that carry wall times (they change from run to run)."""
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?(e[+-]\d+)?")
"""A number as the commands print it (``27.1``, ``692,480``, ``2.4222e-02``)."""

PROMPTS = ["a photo of a cat", "a red car on a street", "an old man with a dog",
           "a painting of a mountain at night", "a blue bird in a tree", "a portrait of a young woman"]
HOLDOUT = ["a horse in a field", "a small house at night", "a green river in the city", "a girl with a yellow flower"]


def _blocks(text: str, heading: str) -> tuple[list[str], tuple[int, int]]:
    """The section's first bash block's commands and the ``(start, end)`` character span of the plain block after it."""
    start = text.index(heading)
    fence = text.index("```bash\n", start) + len("```bash\n")
    bash_end = text.index("```", fence)
    commands = [line for line in text[fence:bash_end].replace("\\\n", " ").splitlines() if line.startswith("bossflow ")]
    plain = text.index("\n```\n", bash_end + 3) + len("\n```\n")
    return commands, (plain, text.index("```", plain))


def _layout(folder: Path) -> None:
    """The files the README's commands read: the tiny SD3 pipeline and the prompt files."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_pipelines import make_sd3_pipeline

    make_sd3_pipeline(folder / "path" / "to" / "sd3-pipeline")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    (folder / "holdout.txt").write_text("\n".join(HOLDOUT) + "\n", encoding="utf-8")


def run_sample(commands: list[str], kind: str, shown: int) -> str:
    """What ``commands[shown]`` prints (stdout), after the commands before it, with ``bossflow.cli.main`` in a fresh
    folder on one thread."""
    import torch

    from bossflow.cli import main

    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            if kind == "pipeline":
                _layout(Path(folder))
            for index, line in enumerate(commands[:shown + 1]):
                printed = io.StringIO()
                argv = shlex.split(line, comments=True)[1:]
                with contextlib.redirect_stdout(printed):
                    code = main([*argv, *([] if "--quiet" in argv else ["--quiet"])])
                if code != 0:
                    raise SystemExit(f"the README command failed: {line}")
        finally:
            os.chdir(here)
    return printed.getvalue()


def drift(shown: str, printed: str, numbers: bool = True) -> list[str]:
    """The stable lines of the README block ``shown`` that the commands no longer print (in order).

    ``numbers=False`` compares the lines with every number masked: their shape, labels and methods only (a search's
    figures depend on the CPU's float rounding, so another CPU may land a few thousandths apart)."""
    def key(line: str) -> str:
        return line if numbers else NUMBER.sub("#", line)

    lines = {key(line) for line in printed.splitlines()}
    return [line for line in shown.splitlines() if line.strip() and not UNSTABLE.search(line) and key(line) not in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the README's blocks with what the commands print")
    parser.add_argument("--all", action="store_true", help="also the pipeline samples (minutes)")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    failures = 0
    for heading, (kind, shown) in SAMPLES.items():
        if kind != "quick" and not args.all:
            continue
        commands, (start, end) = _blocks(text, heading)
        printed = run_sample(commands, kind, shown)
        if args.write:
            text = text[:start] + printed + text[end:]
        else:
            missing = drift(text[start:end], printed)
            failures += bool(missing)
            print(f"{heading}: " + ("up to date" if not missing else "drifted:\n  " + "\n  ".join(missing)))
    if args.write:
        README.write_text(text, encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
