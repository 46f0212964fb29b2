"""``finetune()``: the bundled model adapted to a user's data, from folders to verified exports.

The steps, each reusing the package's own mechanism:

1. OUT: refused when it holds anything unless ``resume`` (continue) or ``overwrite`` (start
   over; the caches stay, keyed by their inputs);
2. data: :mod:`.discover` (our layout or pairs by name), held-out part split off when none is
   given, bundled training images mixed in (:mod:`.caches`, ``replay``);
3. caches: ``build_cache`` per part, reused when their inputs are unchanged;
4. training: ``portraitseg.train.Trainer`` with the recipe (:mod:`.training`), for ``minutes``;
5. exports: ``export_model`` to ONNX (always) and TFLite (when its converter is installed),
   each verified against PyTorch;
6. report: ``evaluate`` of the starting and the fine-tuned model on the held-out images, a model
   card and ``report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.io import DataError, NoSamplesError, one_line, write_atomic
from ..outfiles import check_folder
from .caches import (
    CacheResult,
    CacheSource,
    cached,
    default_replay_roots,
    pick_replay,
    replay_count,
    replay_datasets,
    write_split,
)
from .discover import Discovery, Source, as_given, discover, split_off
from .recipe import FinetuneRecipe
from .report import BeforeAfter, CardFacts, before_after, model_card, use_lines

if TYPE_CHECKING:  # training imports torch: loaded only once the options and data are checked
    from .training import TrainOutcome

STATE = "finetune.json"
# Everything finetune writes into OUT; --overwrite removes these (but keeps cache/) and nothing else.
OWN_NAMES = ("finetune.json", "data", "cache", "run", "model.pt", "model.onnx", "model.tflite",
             "MODEL_CARD.md", "report.json")
RUN = "run"


@dataclass
class FinetuneJob:
    """What one ``portraitseg finetune`` call was asked to do."""

    data: list[Path]
    out: Path
    recipe: FinetuneRecipe
    val: list[Path] = field(default_factory=list)
    replay: Path | None = None  # None: look for ../shared/data
    no_replay: bool = False
    resume: bool = False
    overwrite: bool = False
    threads: int | None = None  # torch/onnxruntime threads: None = all cores
    command: str = "portraitseg finetune"
    bar: bool | None = None  # progress bar: None = on a terminal


@dataclass
class FinetuneResult:
    out: Path
    numbers: BeforeAfter
    epochs: int
    interrupted: bool
    skipped: list[str]
    files: dict[str, Path]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.skipped else 0


def say(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------- OUT


def prepare_out(job: FinetuneJob) -> dict[str, Any] | None:
    """Check OUT before any work; returns the earlier run's state on ``resume``."""
    out = job.out
    if job.resume and job.overwrite:
        raise ValueError("--resume continues a fine-tune and --overwrite starts one over: give one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out}: is a file, not a folder")
    for folder in (*job.data, *job.val):
        if out.resolve().is_relative_to(Path(folder).resolve()):
            raise ValueError(f"-o {out}: is inside the data folder {folder}; put the output elsewhere")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries and job.resume:
        raise ValueError(f"-o {out}: nothing to resume (empty or missing); run without --resume")
    check_folder(f"-o {out}", out, make_folders=True)  # a read-only mount fails here, before any work
    out.mkdir(parents=True, exist_ok=True)
    if not entries:
        return None
    if not (job.resume or job.overwrite):
        listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(f"-o {out}: not empty ({listed}); continue that fine-tune with --resume, start over "
                         "with --overwrite, or pick another -o")
    foreign = [e for e in entries if e not in OWN_NAMES and not e.startswith(".")]
    if foreign or not (out / STATE).is_file():
        what = f"has no {STATE}"
        if foreign:
            what = f"holds files finetune did not write ({', '.join(foreign[:3])})"
        raise ValueError(f"-o {out}: {what}; it is not a fine-tune output, pick another -o")
    state = json.loads((out / STATE).read_text())
    if job.resume:
        _check_same_data(job, state)
        return state
    for name in OWN_NAMES:  # --overwrite: our own results only; cache/ stays (keyed by its inputs)
        path = out / name
        if name == "cache" or not path.exists():
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return None


def _check_same_data(job: FinetuneJob, state: dict[str, Any]) -> None:
    given = {"data": [str(p.resolve()) for p in job.data], "val": [str(p.resolve()) for p in job.val]}
    for key, value in given.items():
        if state.get(key) != value:
            was = " ".join(state.get(key) or []) or "none"
            raise ValueError(f"--resume: {job.out} was fine-tuned with {key} {was}; resume with the same "
                             "folders, or start over with --overwrite")


def _save_state(job: FinetuneJob, extra: dict[str, Any]) -> None:
    state = {"data": [str(p.resolve()) for p in job.data], "val": [str(p.resolve()) for p in job.val],
             "recipe": job.recipe.to_dict(), **extra}
    write_atomic(job.out / STATE, (json.dumps(state, indent=1) + "\n").encode())


# ----------------------------------------------------------------------------- data


@dataclass
class Parts:
    """The split files each cache is built from, and what to say about them."""

    train: list[tuple[Path, Path]] = field(default_factory=list)
    held_out: list[tuple[Path, Path]] = field(default_factory=list)
    replay: list[tuple[Path, Path]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # for the console and the model card
    replay_line: str = "none"
    problems: list[str] = field(default_factory=list)
    n_train: int = 0


def plan_data(job: FinetuneJob) -> Parts:
    """Find the data, choose the held-out part and the replay images, write their split lists."""
    splits = job.out / "data" / "splits"
    taken: set[str] = set()
    found = discover(job.data, job.out / "data", taken)
    held = discover(job.val, job.out / "data", taken) if job.val else Discovery()
    parts = Parts(problems=found.problems + held.problems)
    for source in found.sources:
        train, val, how = _split(source, bool(job.val), job.recipe)
        parts.train.append((source.root, write_split(splits / f"{source.name}.train.txt", train)))
        if val:
            parts.held_out.append((source.root, write_split(splits / f"{source.name}.val.txt", val)))
        parts.n_train += len(train)
        held_out = f"{len(val)} held out {how}" if val else "held-out images from --val"
        parts.lines.append(f"{source.name} ({source.origin}): {len(train)} for training, {held_out}")
    for source in held.sources:
        parts.held_out.append((source.root, write_split(splits / f"{source.name}.val.txt", source.stems)))
        parts.lines.append(f"{source.name} ({source.origin}): {len(source.stems)} held out (--val)")
    _plan_replay(job, parts, found.sources + held.sources, splits)
    return parts


def _split(source: Source, val_given: bool, recipe: FinetuneRecipe) -> tuple[list[str], list[str], str]:
    if val_given:
        return source.stems, [], ""
    if source.given_split is not None and source.given_split[0] and source.given_split[1]:
        return source.given_split[0], source.given_split[1], "(its train.txt / val.txt)"
    train, val = split_off(source.stems, recipe.val_fraction, recipe.seed)
    return train, val, (f"(no held-out set given: {recipe.val_fraction:.0%} split off by itself, seed "
                        f"{recipe.seed}; give --val DIR to choose them)")


def _plan_replay(job: FinetuneJob, parts: Parts, sources: list[Source], splits: Path) -> None:
    recipe = job.recipe
    if job.no_replay or recipe.replay_share <= 0:
        parts.replay_line = "none (--no-replay)" if job.no_replay else "none (replay_share 0)"
        return
    if job.replay is not None and not job.replay.is_dir():
        raise DataError(f"--replay {job.replay}: folder not found")
    roots = [job.replay] if job.replay is not None else default_replay_roots()
    root = next((r for r in roots if r.is_dir()), None)
    if root is None:
        parts.replay_line = ("none: the bundled training data was not found (../shared/data); give "
                             "--replay DIR to mix some in, so the model keeps working on people in general")
        return
    datasets = replay_datasets(root, recipe.replay_sets)
    if not datasets:
        if job.replay is not None:
            raise DataError(f"--replay {root}: neither a dataset (images/ + masks/) nor a folder holding "
                            f"{', '.join(recipe.replay_sets)}")
        parts.replay_line = f"none: {root} holds none of {', '.join(recipe.replay_sets)}"
        return
    exclude = {p for s in sources for p in s.image_paths().values()}
    count = replay_count(parts.n_train, recipe.replay_share, recipe.replay_max)
    picked = pick_replay(datasets, count, recipe.seed, exclude)
    for ds_root, stems in picked:
        parts.replay.append((ds_root, write_split(splits / f"replay-{ds_root.name}.txt", stems)))
    total = sum(len(s) for _, s in picked)
    sets = ", ".join(f"{r.name} {len(s)}" for r, s in picked)
    parts.replay_line = (f"{total} images of the bundled training data from {root} ({sets}), "
                         f"{total / max(1, total + parts.n_train):.0%} of the training set")


def build_caches(job: FinetuneJob, parts: Parts) -> tuple[list[CacheResult], CacheResult]:
    """The training caches (user data, replay) and the held-out cache."""
    from ..commands._common import report_skipped

    size, quality, folder = job.recipe.input_size, job.recipe.cache_quality, job.out / "cache"

    def given(lines: list[str]) -> list[str]:  # the user's files, not our links to them
        return [as_given(line, job.out / "data") for line in lines]

    def cache(sources: list[CacheSource], name: str, what: str) -> CacheResult:
        try:
            # At the training size: the trainer crops and resizes from there, as with `portraitseg cache`.
            result = cached(sources, folder / name, size, quality)
            return dataclasses.replace(result, skipped=given(result.skipped))
        except NoSamplesError as exc:
            # Say why each pair was left out before the one-line error (it said only 'no readable
            # samples to cache'), as the end of a run does.
            report_skipped(list(dict.fromkeys(parts.problems + given(exc.skipped))))
            raise DataError(f"{exc}: every image of the {what} was left out (listed above)") from None

    train = [cache(parts.train, "train.npz", "training part")]
    if parts.replay:
        train.append(cache(parts.replay, "replay.npz", "replay part"))
    val = cache(parts.held_out, "val.npz", "held-out part")
    for c in (*train, val):
        say(f"cache: {c.path} ({'reused: inputs unchanged' if c.reused else 'built'})")
    return train, val


# ----------------------------------------------------------------------------- train, export, report


def train_config(job: FinetuneJob, train: list[CacheResult], val: CacheResult):
    """The trainer's config: the recipe's ``train`` fields, then this run's own."""
    from ..checkpoint import resolve_weights
    from ..train import TrainConfig

    r = job.recipe
    return TrainConfig.from_dict({
        **r.train,
        "train_cache": [str(c.path) for c in train],
        "val_cache": [str(val.path)],
        "init_weights": str(resolve_weights(r.init_weights)),
        "input_size": r.input_size,
        "cpu_bf16": r.bf16,
        "time_budget_s": r.minutes * 60,
        "seed": r.seed,
        "out_dir": str(job.out),
        "run": RUN,
        "progress": False,  # one bar over the budget instead of one per epoch (training.BudgetBar)
    })


def export_all(job: FinetuneJob, best: Path, verify_root: Path) -> tuple[dict[str, Path], list[str]]:
    """model.pt, then model.onnx (always) and model.tflite (when its converter is installed),
    each verified against PyTorch by ``export_model``."""
    from ..checkpoint import load_model, save_weights
    from ..export import ExportConfig, export_model
    from ..export.tflite import tflite_available, tflite_missing

    model = load_model(best)
    files = {"pt": save_weights(model, job.out / "model.pt")}
    notes: list[str] = []
    formats = ["onnx"] + (["tflite"] if tflite_available() else [])
    for fmt in formats:
        cfg = ExportConfig(format=fmt, size=job.recipe.export_size, verify_data=str(verify_root), threads=1)
        result = export_model(model, job.out / f"model.{fmt}", cfg)
        files[fmt] = result.path
        say(f"export: {result.path} ({result.bytes_written / 1e6:.2f} MB), verified: max |probability diff| "
            f"{result.verify.max_abs_diff:.2g} vs PyTorch")
    if "tflite" not in formats:
        notes.append(f"TFLite export skipped: {tflite_missing()}; then run `portraitseg export {files['pt']} "
                     f"--format tflite --size {job.recipe.export_size}`")
        say(f"note: {notes[-1]}")
    return files, notes


def finetune(job: FinetuneJob) -> FinetuneResult:
    """Run the whole fine-tune (see the module docstring)."""
    import torch

    threads = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        return _finetune(job)
    finally:
        torch.set_num_threads(threads)  # the process's setting, as it was (tests call this in-process)


def _finetune(job: FinetuneJob) -> FinetuneResult:
    from ..commands._common import sigterm_as_exit
    from ..train.rundir import prepare_run_dir
    from .training import run_training

    state = prepare_out(job)
    if state is not None:  # --resume: the recipe it started with, for another --minutes
        job.recipe = FinetuneRecipe.from_dict({**state["recipe"], "minutes": job.recipe.minutes})
    parts = plan_data(job)
    for line in parts.lines:
        say(f"data: {line}")
    say(f"replay: {parts.replay_line}")
    train, val = build_caches(job, parts)
    skipped = list(dict.fromkeys(parts.problems + [s for c in (*train, val) for s in c.skipped]))
    last = job.out / RUN / "last.pt"
    resume = last if state is not None and last.is_file() else None
    start_miou = (state or {}).get("start_miou")
    cfg = train_config(job, train, val)
    prepare_run_dir(job.out / RUN, resume, overwrite=False)
    _save_state(job, {"command": job.command, "start_miou": start_miou})
    with sigterm_as_exit():
        outcome = run_training(cfg, job.recipe.freeze_bn, resume, start_miou, job.bar)
    _save_state(job, {"command": job.command, "start_miou": outcome.start_miou})
    if outcome.best is None:
        say(f"interrupted before the first epoch ended: no model to keep; the caches in {job.out / 'cache'} "
            "are kept for the next run (--resume)")
        raise KeyboardInterrupt
    if outcome.interrupted:
        say(f"interrupted after {outcome.epochs} epoch(s): keeping the best so far ({outcome.best}); "
            "continue training with --resume")
    return _finish(job, parts, outcome, skipped)


def _finish(job: FinetuneJob, parts: Parts, outcome: TrainOutcome, skipped: list[str]) -> FinetuneResult:
    """Exports, the before/after numbers, the model card and report.json."""
    assert outcome.best is not None
    files, notes = export_all(job, outcome.best, parts.held_out[0][0])
    numbers = before_after(job.recipe.init_weights, files["onnx"], parts.held_out, job.threads)
    skipped = list(dict.fromkeys(skipped + numbers.skipped))
    if not outcome.bf16 and job.recipe.bf16:
        notes.append("bf16 was asked for, but this CPU has no native bf16 (AVX512-BF16/AMX): trained in fp32")
    result = FinetuneResult(job.out, numbers, outcome.epochs, outcome.interrupted, skipped, files, notes)
    facts = CardFacts(job.command, parts.lines, parts.replay_line, _training_line(job.recipe, outcome),
                      numbers, [f"`{p.name}`" for p in files.values()],
                      notes + [f"left out: {s}" for s in skipped])
    write_atomic(job.out / "MODEL_CARD.md", model_card(facts, files["onnx"]).encode())
    report = {"numbers": numbers.to_dict(), "epochs": outcome.epochs, "interrupted": outcome.interrupted,
              "bf16": outcome.bf16, "files": {k: str(v) for k, v in files.items()}, "skipped": skipped,
              "notes": notes, "history": outcome.history, "command": job.command}
    write_atomic(job.out / "report.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
    _print_summary(result)
    return result


def _training_line(r: FinetuneRecipe, outcome: TrainOutcome) -> str:
    precision = "bf16 autocast" if outcome.bf16 else "fp32"
    stopped = ", interrupted" if outcome.interrupted else ""
    return (f"{outcome.epochs} epoch(s) from the `{r.init_weights}` weights at {r.input_size} px on the CPU "
            f"in {precision} ({r.minutes:g} min budget{stopped}); BatchNorm statistics "
            f"{'frozen' if r.freeze_bn else 'trained'}; best epoch by held-out loss; exported at "
            f"{r.export_size} px. The whole recipe is in `{STATE}` (defaults: configs/finetune.yaml).")


def _print_summary(result: FinetuneResult) -> None:
    say("")
    say(result.numbers.table().rstrip())
    say("")
    say(f"model card: {result.out / 'MODEL_CARD.md'}")
    say("use it:")
    for line in use_lines(result.files["onnx"]):
        say(f"  {line}")
    if result.skipped:
        for msg in result.skipped:
            print(f"skipped: {one_line(msg)}", file=sys.stderr)
        print(f"{len(result.skipped)} file(s) left out (exit 1)", file=sys.stderr)
