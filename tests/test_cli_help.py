"""Every flag of every command says what it does (issue 11): parsed from the real parsers."""

from __future__ import annotations

import argparse
import re

import pytest

from portraitseg.cli import COMMANDS, build_parser


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(only=name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def without_default(text: str | None) -> str:
    return re.sub(r"\(default: [^)]*\)", "", text or "").strip()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help(name: str) -> None:
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in subparser(name)._actions
        if a.help != argparse.SUPPRESS and not without_default(a.help)
    ]
    assert not missing, f"portraitseg {name}: no help text for {', '.join(missing)}"


def test_int8_export_help_names_calib_data() -> None:
    precision = next(a for a in subparser("export")._actions if "--precision" in a.option_strings)
    assert "int8 needs --calib-data" in precision.help


def test_int8_without_calib_data_fails_before_loading(capsys) -> None:
    from portraitseg.cli import main

    assert main(["export", "no-such-model.pt", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "int8 needs --calib-data" in err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_default_is_shown_once(name: str) -> None:
    """A help text that states its own default gets no second '(default: ...)' (issue 18)."""
    twice = [
        "/".join(a.option_strings) or a.dest
        for a in subparser(name)._actions
        if a.help and a.help != argparse.SUPPRESS and a.help.count("(default:") > 1
    ]
    assert not twice, f"portraitseg {name}: default shown twice for {', '.join(twice)}"
