"""The command line explains itself: help and default for every option, ``--version``, ``ls`` lines."""

from __future__ import annotations

import argparse

import pytest

from ntdmbench import __version__
from ntdmbench.benchmark.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    commands = dict(_commands(build_parser()))
    assert {("run",), ("score",), ("ls",), ("train",), ("suite", "run"), ("table",), ("compare",), ("bench",),
            ("data", "synth"), ("validate",)} <= set(commands)
    for path, parser in commands.items():
        text = parser.format_help()
        assert text  # formats without error
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"ntdmbench {' '.join(path)} {action.dest}: no help"
            shown = action.default is not None and action.default is not False and action.default != []
            if shown:
                assert "default" in parser.formatter_class(parser.prog)._get_help_string(action), (path, action.dest)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"ntdmbench {__version__}"


def test_ls_gives_one_line_per_model_dataset_and_suite(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    sections, current = {}, None
    for line in out.splitlines():
        if not line.startswith(" "):
            current = line.rstrip(":")
            sections[current] = {}
        else:
            name, _, text = line.strip().partition("  ")
            sections[current][name] = text.strip()
    assert set(sections) == {"models", "datasets", "metrics", "suites"}
    for section in ("models", "datasets", "suites"):
        assert all(len(text) > 10 and "(" not in text[:1] for text in sections[section].values()), section
    assert sections["datasets"]["occluded-pascal3d/val/L2"] == "Occluded PASCAL3D+ val, occlusion level L2 (NeMo-prepared)"
    assert sections["models"]["ntdm"].startswith("NTDM (Wang")
    assert sections["suites"]["smoke-table1"] == "Table 1 of the smoke suite"
