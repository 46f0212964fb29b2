"""Option validation (issue 17 item 15): one check per option (``options.check_value``), applied
when a flag is parsed (every command's generated flags) and when a config is made or validated
(the library and the server), each failure a one-line error naming the option."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from portraitseg.cli import build_parser, main
from portraitseg.options import ANY, NOT_NEGATIVE, Bounds, check_options, check_value, flag_type, option
from portraitseg.postprocess import PostprocessConfig

ASSET = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    size: int = option(8, "a size")
    ratio: float = option(0.5, "a ratio", bounds=Bounds(low=0, high=1, low_open=True))
    offset: float = option(0.0, "may be negative", bounds=ANY)
    kernel: int = option(0, "odd or 0", bounds=Bounds(odd=True))
    limit: int = option(4096, "in KiB", flag="--limit-kb", scale=1024, type=float)
    name: str | None = option(None, "text: not checked")
    hidden: float = math.nan  # no help: not an option


@pytest.mark.parametrize(("changes", "message"), [
    ({"size": -1}, "--size must be >= 0; got -1"),
    ({"ratio": math.nan}, "--ratio must be a finite number in (0, 1]; got nan"),
    ({"ratio": 0.0}, "--ratio must be in (0, 1]; got 0"),
    ({"offset": math.inf}, "--offset must be a finite number; got inf"),
    ({"kernel": 4}, "--kernel must be 0 (off) or an odd number; got 4"),
    ({"limit": -2048}, "--limit-kb must be >= 0; got -2"),  # shown in the flag's units
])
def test_check_options_names_the_flag_in_one_line(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        check_options(_Cfg(**changes))
    assert str(exc.value) == message


def test_valid_values_pass() -> None:
    check_options(_Cfg())
    check_options(_Cfg(size=0, ratio=1.0, offset=-3.5, kernel=5, name="x"))
    field = next(f for f in dataclasses.fields(_Cfg) if f.name == "ratio")
    assert check_value(field, None) is None and check_value(field, 0.25) is None
    assert check_value(field, (0.5, math.nan)) == "must be a finite number in (0, 1]"


def test_flag_type_checks_at_parse_time_in_config_units() -> None:
    parser = argparse.ArgumentParser()
    fields = {f.name: f for f in dataclasses.fields(_Cfg)}
    parser.add_argument("--limit-kb", type=flag_type(fields["limit"], float))
    parser.add_argument("--ratio", type=flag_type(fields["ratio"], float))
    assert parser.parse_args(["--limit-kb", "2", "--ratio", "1"]).limit_kb == 2.0
    for argv in (["--limit-kb", "inf"], ["--ratio", "nan"], ["--ratio", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


# --------------------------------------------------------------------------- every command's flags

# Enough positional arguments for each command that takes generated (options.py) flags.
COMMANDS = {
    "predict": ["x.jpg"], "eval": ["--data", "d"], "serve": [], "export": ["default"],
    "video": ["in.mp4", "out.mp4"], "webcam": ["0"],
}


def _checked_flags(command: str) -> tuple[argparse.ArgumentParser, list[argparse.Action]]:
    """The command's parser and its flags generated from a config field (their type knows it)."""
    sub = next(a for a in build_parser(only=command)._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    return parser, [a for a in parser._actions if a.option_strings and hasattr(a.type, "option")]


def _out_of_bounds(action: argparse.Action) -> list[str]:
    """Values the flag must refuse: NaN, infinity, and one step past each end of its range."""
    bounds: Bounds = action.type.option.metadata.get("bounds", NOT_NEGATIVE)
    scale = action.type.option.metadata.get("scale") or 1
    values = ["nan", "inf", "-inf"]
    if bounds.low is not None:
        values.append(f"{bounds.low / scale - 1:g}")
    if bounds.high is not None:
        values.append(f"{bounds.high / scale + 1:g}")
    return values


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_generated_number_flag_refuses_out_of_range_values(command: str, capsys) -> None:
    # Parsing only (never runs the command): each refusal is argparse's usage + one error line.
    parser, flags = _checked_flags(command)
    assert flags, f"{command}: no generated flags found"
    refused = 0
    for action in flags:
        flag = action.option_strings[0]
        if action.type.__name__ not in ("int", "float", "positive_int"):
            continue
        for bad in _out_of_bounds(action):
            with pytest.raises(SystemExit) as exc:
                parser.parse_args([*COMMANDS[command], f"{flag}={bad}"])  # "-inf" is not a flag
            err = capsys.readouterr().err.strip().splitlines()
            assert exc.value.code == 2, (command, flag, bad)
            assert err[-1].startswith(f"portraitseg {command}: error: argument {flag}: "), err[-1]
            assert any(word in err[-1] for word in ("must be", "invalid", "expected a whole number")), err[-1]
            refused += 1
    assert refused >= 3


def test_postprocess_flags_named_in_the_issue_exit_2_and_write_nothing(tmp_path: Path, capsys) -> None:
    # Before: each ran, exit 0, and --component-threshold nan wrote an all-black mask.
    for flag, value, text in (
        ("--guided-eps", "nan", "must be a finite number > 0; got nan"),
        ("--component-threshold", "nan", "must be a finite number in (0, 1); got nan"),
        ("--guided-work-side", "-5", "must be >= 0; got -5"),
        ("--component-threshold", "1.5", "must be in (0, 1); got 1.5"),
    ):
        out = tmp_path / "out"
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(ASSET), "-o", str(out), "--backend", "onnx", "--no-progress", flag, value])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"argument {flag}: {text}" in err
        assert not out.exists()
    # --smoothstep's pair is checked by the config (edge order as well): exit 2 from the CLI.
    code = main(["predict", str(ASSET), "-o", str(tmp_path / "o"), "--smoothstep", "0", "inf"])
    assert code == 2 and "--smoothstep must be a finite number; got 0 inf" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- library and server


@pytest.mark.parametrize(("changes", "message"), [
    ({"guided_eps": math.nan}, "--guided-eps must be a finite number > 0; got nan"),
    ({"component_threshold": math.nan}, "--component-threshold must be a finite number in (0, 1); got nan"),
    ({"guided_work_side": -5}, "--guided-work-side must be >= 0; got -5"),
    ({"component_fraction": 0.0}, "--component-fraction must be in (0, 1]; got 0"),
    ({"guided_radius": 0}, "--guided-radius must be >= 1; got 0"),
    ({"blur_size": 4}, "--blur-size must be 0 (off) or an odd number; got 4"),
    ({"smoothstep": (0.8, 0.2)}, "--smoothstep needs EDGE0 < EDGE1; got 0.8 0.2"),
])
def test_postprocess_config_refuses_bad_values_when_made(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        PostprocessConfig(**changes)
    assert str(exc.value) == message
    with pytest.raises(ValueError):
        dataclasses.replace(PostprocessConfig(), **changes)  # no way around it


def test_server_engine_gets_only_valid_postprocessing() -> None:
    from portraitseg.server.config import ServerConfig

    with pytest.raises(ValueError, match=r"^--guided-eps must be a finite number > 0; got nan$"):
        ServerConfig(postprocess=PostprocessConfig(guided_eps=float("nan")))
    from portraitseg import postprocess as pp

    low = np.zeros((8, 8), np.float32)
    low[2:6, 2:6] = 1.0
    cfg = PostprocessConfig(guided=False, component_threshold=0.99)
    alpha = pp.apply(low, np.zeros((16, 16, 3), np.uint8), cfg)
    assert alpha.max() > 0.5  # the valid end of the range still finds the person
