"""Flags generated from the dataclass configs: defaults and help come from the config, and the
old flag spellings keep working; SIGTERM's exit code survives a C extension wrapping it. (The
output checks the commands share are portraitseg.outfiles: tests/test_outfiles.py.)"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import time

import pytest

from portraitseg.cli import build_parser
from portraitseg.commands._common import add_config_flags, config_from_args, sigterm_as_exit


@dataclasses.dataclass(frozen=True)
class _Cfg:
    size: int = dataclasses.field(default=8, metadata={"help": "a size"})
    limit: int = dataclasses.field(default=4 * 1024, metadata={"help": "in KiB", "flag": "--limit-kb",
                                                               "scale": 1024, "type": float})
    on: bool = dataclasses.field(default=True, metadata={"help": "a switch"})
    name: str | None = dataclasses.field(default=None, metadata={"help": "optional"})
    hidden: int = 3  # no help: not a flag


def _parse(argv: list[str]) -> _Cfg:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Cfg)
    return config_from_args(_Cfg, parser.parse_args(argv))


def test_generated_flags_keep_config_defaults_and_convert_units() -> None:
    assert _parse([]) == _Cfg()
    assert _parse(["--size", "16", "--limit-kb", "2", "--no-on", "--name", "x"]) == _Cfg(16, 2048, False, "x")
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Cfg)
    text = parser.format_help()
    assert "a size (default: 8)" in text and "(default: 4.0)" in text and "--hidden" not in text


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_serve_flags_come_from_server_config_and_old_spellings_work() -> None:
    from portraitseg.server.config import MB, ServerConfig

    args = _args("serve", "--workers-threads", "3", "--max-body-mb", "2.5", "--max-megapixels", "1",
                 "--timeout", "7", "--model-threads", "2", "--max-concurrency", "5")
    cfg = config_from_args(ServerConfig, args)
    assert (cfg.worker_threads, cfg.model_threads, cfg.max_concurrency) == (3, 2, 5)
    assert cfg.max_body_bytes == int(2.5 * MB) and cfg.max_pixels == 1_000_000 and cfg.timeout_s == 7.0
    assert cfg.web_dir is None  # serve locates the repository's web/ itself (server/webapp.py)
    defaults = config_from_args(ServerConfig, _args("serve"))
    assert defaults.max_body_bytes == ServerConfig().max_body_bytes and defaults.timeout_s == 30.0
    with pytest.raises(ValueError, match="must be >= 1"):
        ServerConfig(model_threads=0).validate()


@pytest.mark.parametrize(("changes", "message"), [
    ({"worker_threads": 0}, "--workers-threads must be >= 1; got 0"),
    ({"max_body_bytes": 0}, "--max-body-mb must be > 0; got 0"),
    ({"timeout_s": float("inf")}, "--timeout must be a positive number of seconds; got inf"),
    ({"retry_after_s": -1}, "--retry-after-s must be >= 0; got -1"),
    ({"max_inflight_pixels": 1_000_000, "max_pixels": 2_000_000},
     "--max-inflight-megapixels (1) must be at least --max-megapixels (2)"),
])
def test_server_config_errors_name_the_flag_serve_has(changes: dict, message: str) -> None:
    """ServerConfig.validate names each field by options.flag_name, the flag the CLI generates
    (a renamed one such as --workers-threads included), so every flag in a message exists."""
    from portraitseg.server.config import ServerConfig

    with pytest.raises(ValueError) as exc:
        ServerConfig(**changes).validate()
    assert str(exc.value) == message
    serve = next(a for a in build_parser(only="serve")._actions if a.dest == "command").choices["serve"]
    flags = {s for action in serve._actions for s in action.option_strings}
    assert {w.strip("()") for w in message.split() if w.startswith("--")} <= flags


def test_export_flags_come_from_export_config() -> None:
    from portraitseg.commands.export import config_from_cli
    from portraitseg.export import ExportConfig

    assert config_from_cli(_args("export", "default")) == ExportConfig()
    cfg = config_from_cli(_args("export", "m.pt", "--format", "onnx", "--dynamic", "--flatten",
                                "--output-kind", "probability", "--calib-count", "4", "--verify-count", "1"))
    assert cfg.dynamic and cfg.flatten and cfg.output_kind == "probability"
    assert (cfg.calib_count, cfg.verify_count) == (4, 1)


@pytest.mark.parametrize("command", [["video", "in.mp4", "out.mp4"], ["webcam", "0"]])
def test_video_and_webcam_take_predicts_postprocess_flags(command: list[str]) -> None:
    from portraitseg.commands.video import model_config

    cfg = model_config(_args(*command, "--no-smoothing", "--blur-size", "5", "--no-guided", "--threads", "2"))
    assert not cfg.smoothing and cfg.threads == 2
    assert cfg.postprocess.blur_size == 5 and not cfg.postprocess.guided
    assert model_config(_args(*command)).smoothing  # on by default


@pytest.mark.parametrize("argv", [
    ["predict", "x.jpg", "--threads", "-1"],
    ["eval", "--data", "d", "--threads", "0"],
    ["bench", "--threads", "1,-1"],
    ["export", "default", "--threads", "-1"],
    ["cache", "o.npz", "--images", "d", "--max-pixels", "0"],
])
def test_thread_and_pixel_counts_must_be_positive(argv: list[str], capsys) -> None:
    from portraitseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_sigterm_exit_code_survives_an_exception_that_wraps_it() -> None:
    """SIGTERM during a C extension's import surfaces as ImportError; the command must still
    exit 143 (it printed a traceback and exited 1)."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        with sigterm_as_exit():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except SystemExit as inner:
                raise ImportError("initialization failed") from inner
    assert exc.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


@pytest.mark.parametrize("argv", [
    ["predict", "x.jpg", "-o", "o", "--threads", "100000"],
    ["eval", "--data", "d", "--threads", "100000"],
    ["bench", "--threads", "1,100000"],
    ["video", "a.mp4", "b.mp4", "--threads", "100000"],
    ["serve", "--model-threads", "100000"],
    ["serve", "--workers-threads", "100000"],
])
def test_every_threads_flag_has_the_one_limit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """One MAX_THREADS (portraitseg.defaults) for every thread flag: predict said 256, video 128,
    and eval, bench and serve had no limit (100000 threads: minutes in ONNX Runtime, a SIGSEGV in
    LiteRT)."""
    from portraitseg.cli import main
    from portraitseg.defaults import MAX_THREADS

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage error
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{MAX_THREADS}" in err and "100000" in err and "threads" in err, err
