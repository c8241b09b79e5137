"""Every numeric option of every command refuses a bad value at the boundary: exit status 2,
one line ``bossflow: error: argument --OPTION: expected ...`` on stderr, before any model work.

Type errors leave through argparse (``SystemExit(2)``), as in ``test_cli.py``; the one-line
message is ``cli/_args.Parser``'s.
"""

from __future__ import annotations

import time

import pytest

from bossflow.cli import main
from bossflow.cli.classifier import main as classifier_main

SCHEDULE = ["schedule", "--model", "gmm-2d", "--quiet"]
SAMPLE = ["sample", "--model", "gmm-2d", "--nfe", "2", "--out", "x.npy"]
EVALUATE = ["evaluate", "--model", "gmm-2d", "--schedule", "uniform", "--nfe", "2", "--out", "eval"]
BENCH = ["bench", "--models", "gmm-2d", "--out", "bench", "--quiet"]
TEACHER = ["teacher", "gmm-2d", "--out", "teacher", "--quiet"]
STRAIGHTEN = ["straighten", "--model", "gmm-2d-teacher", "--schedule", "s.json", "--out", "student", "--quiet"]
EXPORT = ["export", "s.json"]

POSITIVE_INT = "expected a positive integer"
NON_NEGATIVE_INT = "expected a non-negative integer"
POSITIVE_NUMBER = "expected a positive number"
BUDGETS = "expected positive integers such as 2,4,6"
SHAPE = "expected positive sizes"

CASES = [  # (command line, the option it names, what the message says)
    (SCHEDULE, "--shape", "-3", SHAPE),
    (SCHEDULE, "--shape", "0,4", SHAPE),
    (SCHEDULE, "--shape", "3,,32", SHAPE),
    (SCHEDULE, "--shape", "", SHAPE),
    (SCHEDULE, "--nfe", "0", BUDGETS),
    (SCHEDULE, "--nfe", "2,-4", BUDGETS),
    (SCHEDULE, "--nfe", "6-2", "expected at least one positive integer"),
    (SCHEDULE, "--nfe", "a,b", BUDGETS),
    (SCHEDULE, "--grid-steps", "0", POSITIVE_INT),
    (SCHEDULE, "--samples", "0", POSITIVE_INT),
    (SCHEDULE, "--seed", "-1", NON_NEGATIVE_INT),
    (SCHEDULE, "--batch-size", "0", POSITIVE_INT),
    (SCHEDULE, "--substeps", "0", POSITIVE_INT),
    (SCHEDULE, "--guidance-scale", "0", POSITIVE_NUMBER),
    (SCHEDULE, "--guidance-scale", "nan", POSITIVE_NUMBER),
    (SCHEDULE, "--guidance-scale", "inf", POSITIVE_NUMBER),
    (SCHEDULE, "--height", "-16", POSITIVE_INT),
    (SCHEDULE, "--width", "0", POSITIVE_INT),
    (SCHEDULE, "--max-calls", "0", POSITIVE_INT),
    (SCHEDULE, "--holdout-samples", "-1", NON_NEGATIVE_INT),
    (SAMPLE, "--n", "0", POSITIVE_INT),
    (SAMPLE, "--nfe", "0", POSITIVE_INT),
    (SAMPLE, "--batch-size", "-5", POSITIVE_INT),
    (SAMPLE, "--per-row", "0", POSITIVE_INT),
    (SAMPLE, "--shape", "2,-1", SHAPE),
    (SAMPLE, "--seed", "1.5", NON_NEGATIVE_INT),
    (EVALUATE, "--samples", "0", POSITIVE_INT),
    (EVALUATE, "--nfe", "0", BUDGETS),
    (EVALUATE, "--batch-size", "0", POSITIVE_INT),
    (EVALUATE, "--seed", "-2", NON_NEGATIVE_INT),
    (EVALUATE, "--shape", "0", SHAPE),
    (BENCH, "--grid-steps", "-1", POSITIVE_INT),
    (BENCH, "--search-samples", "0", POSITIVE_INT),
    (BENCH, "--eval-samples", "0", POSITIVE_INT),
    (BENCH, "--nfe", "0,2", BUDGETS),
    (BENCH, "--shape", "0", SHAPE),
    (TEACHER, "--steps", "0", POSITIVE_INT),
    (TEACHER, "--lr", "0", POSITIVE_NUMBER),
    (TEACHER, "--lr", "-1e-3", POSITIVE_NUMBER),
    (TEACHER, "--batch-size", "0", POSITIVE_INT),
    (TEACHER, "--checkpoint-every", "-1", NON_NEGATIVE_INT),
    (TEACHER, "--threads", "0", POSITIVE_INT),
    (STRAIGHTEN, "--ema-decay", "1.5", "expected a decay in [0, 1)"),
    (STRAIGHTEN, "--ema-decay", "1", "expected a decay in [0, 1)"),
    (STRAIGHTEN, "--ema-decay", "-0.1", "expected a decay in [0, 1)"),
    (STRAIGHTEN, "--ema-decay", "nan", "expected a decay in [0, 1)"),
    (STRAIGHTEN, "--weight-decay", "-1", "expected a number >= 0"),
    (STRAIGHTEN, "--weight-decay", "inf", "expected a number >= 0"),
    (STRAIGHTEN, "--lr", "0", POSITIVE_NUMBER),
    (STRAIGHTEN, "--grad-clip", "0", POSITIVE_NUMBER),
    (STRAIGHTEN, "--lora-rank", "0", POSITIVE_INT),
    (STRAIGHTEN, "--lora-alpha", "-2", POSITIVE_NUMBER),
    (STRAIGHTEN, "--samples", "0", POSITIVE_INT),
    (STRAIGHTEN, "--micro-batch", "0", POSITIVE_INT),
    (STRAIGHTEN, "--nfe", "0", BUDGETS),
    (STRAIGHTEN, "--steps", "-3", POSITIVE_INT),
    (STRAIGHTEN, "--batch-size", "0", POSITIVE_INT),
    (STRAIGHTEN, "--grid-steps", "0", POSITIVE_INT),
    (STRAIGHTEN, "--substeps", "0", POSITIVE_INT),
    (STRAIGHTEN, "--grid-power", "0.5", "expected a number from 1 to 4"),
    (STRAIGHTEN, "--grid-power", "nan", "expected a number from 1 to 4"),
    (STRAIGHTEN, "--pair-batch-size", "0", POSITIVE_INT),
    (STRAIGHTEN, "--checkpoint-every", "-1", NON_NEGATIVE_INT),
    (STRAIGHTEN, "--threads", "0", POSITIVE_INT),
    (EXPORT, "--nfe", "0", POSITIVE_INT),
]


def exit_status(entry, argv: list[str]) -> int:
    """The status ``entry(argv)`` ends with: its return value, or argparse's ``SystemExit`` code."""
    try:
        return entry(argv)
    except SystemExit as exc:
        return exc.code


def check_refused(entry, argv: list[str], option: str, message: str, capsys) -> None:
    started = time.perf_counter()
    assert exit_status(entry, argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"bossflow: error: argument {option}: {message}"), err
    assert time.perf_counter() - started < 5  # refused before any model is loaded


@pytest.mark.parametrize("command, option, value, message", CASES,
                         ids=[f"{c[0]} {o} {v}" for c, o, v, _ in CASES])
def test_bad_number_is_refused_naming_the_option(tmp_path, monkeypatch, capsys, command, option, value, message):
    monkeypatch.chdir(tmp_path)
    check_refused(main, [*command, f"{option}={value}"], option, message, capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("option, value, message", [("--seed", "-1", NON_NEGATIVE_INT), ("--epochs", "0", POSITIVE_INT)])
def test_classifier_options(tmp_path, capsys, option, value, message):
    check_refused(classifier_main, ["--out", str(tmp_path / "c"), option, value], option, message, capsys)


def test_auto_needs_two_search_noises(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    assert main([*SCHEDULE, "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "bossflow: error: --method auto needs --samples 2 or more (some noises to fit, some to validate), got 1.\n"
    assert time.perf_counter() - started < 5


def test_usage_errors_are_one_line_too(capsys):
    check = [(["schedule"], "the following arguments are required: --model"),
             (["nope"], "argument COMMAND: invalid choice: 'nope'")]
    for argv, message in check:
        assert exit_status(main, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bossflow: error: {message}") and len(err.splitlines()) == 1
