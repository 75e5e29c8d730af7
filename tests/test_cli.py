"""The command line as a whole: every command listed in order, listing them imports no engine module, options
that come from engine constants are there when a command is parsed, and argparse code only in evaluators/cli/."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent

COMMANDS = ["demo-data", "inspect-set", "label", "encoders", "index", "fidelity", "models", "generate", "privacy",
            "privacy-protocol", "train-reid", "neighbours", "embedding-map", "inspect", "leaderboard", "utility", "reader-study", "report-utility", "report-models"]


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_help_lists_every_command_in_order(capsys):
    assert _commands(build_parser()) == COMMANDS
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    listed = re.findall(r"^    ([a-z-]+)\s", capsys.readouterr().out, flags=re.M)
    assert listed == COMMANDS


def test_listing_the_commands_imports_no_engine_module():
    code = ("import sys; from evaluators.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'scipy', 'PIL', 'evaluators.fidelity', "
            "'evaluators.index', 'evaluators.privacy.suite', 'evaluators.encoders') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"


def test_options_from_engine_constants_are_added_when_the_command_is_parsed(capsys):
    from evaluators.fidelity import DEFAULT_MIN_COUNT
    from evaluators.privacy.search import DEFAULT_CANDIDATES, DEFAULT_MATCH

    args = build_parser().parse_args(["fidelity", "--real", "r", "--synthetic", "s", "--out", "o.json"])
    assert (args.match, args.min_count, args.encoder_dtype, args.preprocess) == ("labels", DEFAULT_MIN_COUNT,
                                                                                "float32", "auto")
    args = build_parser().parse_args(["privacy-protocol", "--model", "m", "--train", "t", "--out", "o.json"])
    assert (args.match, args.candidates, args.seeds, args.reid) == (DEFAULT_MATCH, DEFAULT_CANDIDATES, 3, "auto")
    args = build_parser().parse_args(["reader-study", "create", "--reference", "demo", "--synthetic", "s"])
    assert args.questions == "real_synthetic,findings,quality,comment"
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["index", "--reference", "demo", "--out", "o", "--index-type", "kd-tree"])
    assert exc.value.code == 2
    assert "invalid choice: 'kd-tree'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-reid", "--help"])
    assert "--backbone {resnet50,resnet18,tiny}" in capsys.readouterr().out


def test_argparse_code_lives_only_in_the_cli_package():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "evaluators").rglob("*.py")
        if p.parent.name != "cli" and re.search(r"import argparse|add_argument\(|add_parser\(|def add_cli", p.read_text())
    ]
    assert offenders == []
