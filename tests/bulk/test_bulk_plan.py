"""Bulk jobs without Ray: pinned settings, planning with predict's record, defaults, the CLI shell."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from portraitseg.bulk import BulkSettings, Resources
from portraitseg.bulk.plan import plan_jobs, row_record
from portraitseg.cli import build_parser, install_hint
from portraitseg.commands.predict import Job
from portraitseg.commands.predict_record import Record, file_digest


def test_for_workers_pins_the_model_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from portraitseg.runtimes import resolve_backend

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    pinned = BulkSettings(model="m.onnx").for_workers()
    assert pinned.model == str(model.resolve())  # workers run in other folders
    assert BulkSettings().for_workers().backend == resolve_backend("auto") != "auto"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_plan_applies_predicts_naming_checks_and_hands_rows_their_record(tmp_path: Path) -> None:
    src = tmp_path / "in"
    jobs = [Job(write(src / name, b"x"), Path()) for name in ("a.jpg", "a.png", "b.jpg")]
    jobs.append(Job(write(src / "sub" / "c.jpg", b"y"), Path("sub")))
    out = tmp_path / "out"
    record = Record.load(out)
    done = write(out / "sub" / "c.mask.png", b"done before")
    record.add({done: ("recipe-1", b"done before")}, file_digest(jobs[3].path))
    plan = plan_jobs(jobs, out, ("mask",), "jpg", Record.load(out))
    assert [r["path"] for r in plan.rows] == [str(src / n) for n in ("a.jpg", "b.jpg", "sub/c.jpg")]
    assert plan.rows[1]["out_mask"] == str((out / "b.mask.png").resolve())
    assert plan.rows[0]["record"] == ""
    assert len(plan.failed) == 1 and plan.failed[0].startswith(f"{src / 'a.png'}: output ")
    assert "also the output of" in plan.failed[0]

    # A worker sees the record's verdict through the entries its row carries.
    view = row_record(str(out.resolve()), str(plan.rows[2]["record"]))
    wanted = {Path(str(plan.rows[2]["out_mask"])): "recipe-1"}
    assert view.up_to_date(wanted, file_digest(jobs[3].path))
    assert not view.up_to_date({Path(str(plan.rows[2]["out_mask"])): "recipe-2"}, file_digest(jobs[3].path))
    assert not view.up_to_date(wanted, file_digest(jobs[0].path))  # another input under that name
    assert not view.writable
    assert plan_jobs(jobs, out, ("mask",), "jpg", None).rows[2]["record"] == ""  # --overwrite


def test_resources_default_from_the_cluster() -> None:
    assert Resources().resolve(1000, 2.0) == Resources(actors=1, threads=1, batch_size=16)
    assert Resources().resolve(100, 16.0) == Resources(actors=12, threads=1, batch_size=2)
    assert Resources(threads=4).resolve(10_000, 16.0).actors == 3
    assert Resources().resolve(3, 16.0).batch_size == 1  # small jobs: every actor gets work
    assert Resources().resolve(None, 8.0).batch_size == 16  # a dataset of unknown length
    assert Resources(actors=5, batch_size=7).resolve(3, 64.0) == Resources(actors=5, threads=1, batch_size=7)


def test_an_actor_the_cluster_cannot_run_beside_the_tasks_is_refused() -> None:
    # Both waited forever, printing nothing (real runs on a 2-CPU local Ray: --threads 4, --threads 2):
    # an actor larger than any node never starts; one holding every CPU starves the read/write tasks.
    assert Resources(threads=2).resolve(10, 3.0, 3.0).threads == 2
    assert Resources(threads=4).resolve(10, 32.0, 4.0).threads == 4
    for threads, cluster, node in ((4, 2.0, 2.0), (2, 2.0, 2.0), (8, 32.0, 4.0)):
        with pytest.raises(ValueError, match=rf"^--threads {threads}: each actor needs that many CPUs"):
            Resources(threads=threads).resolve(10, cluster, node)


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser(only=name)._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


# predict's options that `bulk` reads in commands/bulk.py (post-processing flags aside: those
# reach both through postprocess_config).
PREDICT_OPTIONS_BULK_HONOURS = {"help", "inputs", "outdir", "output", "background", "composite_format",
                                "model", "backend", "threads", "max_pixels", "overwrite", "no_progress"}


def dests(parser: argparse.ArgumentParser, skip_group: str = "post-processing") -> set[str]:
    skipped = {a.dest for g in parser._action_groups if g.title and g.title.startswith(skip_group)
               for a in g._group_actions}
    return {a.dest for a in parser._actions} - skipped


def test_bulk_takes_every_predict_option_and_its_own() -> None:
    predict, bulk = subparser("predict"), subparser("bulk")
    # bulk takes predict's parser as a parent, so a new predict option reaches bulk at once:
    # this fails until bulk's run() uses it too (then add it to the set above).
    assert dests(predict) == PREDICT_OPTIONS_BULK_HONOURS
    assert dests(predict) | {"actors", "batch_size", "address"} == dests(bulk)
    args = bulk.parse_args(["in", "-o", "o", "--output", "grid", "--actors", "3", "--no-guided"])
    got = (args.inputs, args.output, args.actors, args.threads, args.batch_size)
    assert got == (["in"], ["grid"], 3, 1, None)
    assert args.guided is False


def test_without_ray_one_line_names_the_extra() -> None:
    # sys.modules[name] = None makes `import name` fail like an absent package.
    code = ("import sys\nsys.modules['ray'] = None\nfrom portraitseg.cli import main\n"
            "sys.exit(main(['bulk', 'x.jpg']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "portraitseg bulk: error: ray is not installed; this command needs the 'ray' extra: "
        + install_hint("ray")
    ]
