"""The fine-tune's before/after numbers (``evaluate`` on the held-out images, the starting model
vs the exported fine-tuned one) and its model card."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.datasets import FolderDataset, Sample, SkipReport

# (summary key, column title) of the before/after table.
COLUMNS = (("miou", "mIoU"), ("person_iou", "person IoU"), ("boundary_f1", "BF1"))


class HeldOut:
    """The held-out parts of every DATA folder as one dataset for ``evaluate``: the numbers are
    over all held-out pixels together, as ``portraitseg eval`` computes them for one set."""

    name = "held-out"

    def __init__(self, parts: list[tuple[Path, Path]], max_pixels: int | None = None) -> None:
        extra = {} if max_pixels is None else {"max_pixels": max_pixels}
        self.parts = [FolderDataset(root, split, on_error="skip", **extra) for root, split in parts]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[Sample]:
        for part in self.parts:
            yield from part

    @property
    def skipped(self) -> SkipReport:
        """Every part's skipped files (what ``evaluate`` lists in its result)."""
        return SkipReport([e for part in self.parts for e in part.skipped.errors])


@dataclass
class BeforeAfter:
    """Held-out scores of the starting model and the fine-tuned one (evaluate's summaries)."""

    before: dict[str, Any]
    after: dict[str, Any]
    before_label: str
    after_label: str
    skipped: list[str] = field(default_factory=list)

    def gain(self, key: str = "miou") -> float:
        return float(self.after[key]) - float(self.before[key])

    def table(self) -> str:
        from ..reports import markdown_table

        rows = [[self.before_label, *(f"{self.before[k]:.3f}" for k, _ in COLUMNS)],
                [self.after_label, *(f"{self.after[k]:.3f}" for k, _ in COLUMNS)],
                ["change", *(f"{self.gain(k):+.3f}" for k, _ in COLUMNS)]]
        n = self.after["n_images"]
        return markdown_table([f"model ({n} held-out images)", *(title for _, title in COLUMNS)], rows)

    def to_dict(self) -> dict[str, Any]:
        keep = ("miou", "person_iou", "background_iou", "pixel_accuracy", "boundary_f1", "n_images",
                "backend", "input_size")
        return {"before": {"model": self.before_label, **{k: self.before[k] for k in keep}},
                "after": {"model": self.after_label, **{k: self.after[k] for k in keep}},
                "gain_miou": self.gain(), "skipped": self.skipped}


def before_after(start: str, tuned: Path, parts: list[tuple[Path, Path]],
                 threads: int | None = None) -> BeforeAfter:
    """Score the starting model (``"default"``: the bundled ONNX, as the export it is compared
    with) and the exported fine-tuned model on the held-out images."""
    from ..evaluate import evaluate
    from ..runtimes import open_model

    start_label = "bundled" if start == "default" else f"start ({Path(start).name})"
    runtimes = [open_model(start, "onnx" if start == "default" else "auto", threads, name=start_label),
                open_model(tuned, threads=threads, name=f"fine-tuned ({tuned.name})")]
    summaries = []
    skipped: list[str] = []
    for runtime in runtimes:
        data = HeldOut(parts)
        result = evaluate(runtime, data, progress=True, keep_worst=0)
        summaries.append(result.summary)
        skipped = result.skipped
    return BeforeAfter(summaries[0], summaries[1], runtimes[0].name, runtimes[1].name, skipped)


def use_lines(model: Path) -> list[str]:
    """How to use the result: the CLI line and the Python line."""
    return [f"portraitseg predict --model {model} photo.jpg -o out",
            f'portraitseg.Segmenter(model="{model}")']


@dataclass
class CardFacts:
    """What the model card states (all measured or recorded by this run)."""

    command: str
    data: list[str]  # one line per DATA folder: name, counts, how the held-out part was chosen
    replay: str
    training: str  # epochs, minutes, input size, precision, BatchNorm
    numbers: BeforeAfter
    files: list[str]
    notes: list[str] = field(default_factory=list)


def model_card(facts: CardFacts, model: Path) -> str:
    lines = ["# Fine-tuned portraitseg model", "",
             "The bundled Mobile-UNet adapted to the data below with `portraitseg finetune`.", "",
             "## Command", "", "```bash", facts.command, "```", "",
             "## Data", "", *(f"- {line}" for line in facts.data), f"- replay: {facts.replay}", "",
             "## Training", "", facts.training, "",
             "## Held-out numbers", "",
             "Over all held-out pixels together (`portraitseg eval`'s definitions; BF1 = boundary F1). "
             "The held-out images also chose the best epoch (by loss), so the fine-tuned row is a little "
             "optimistic; a separate `--val` set that you never look at while tuning avoids that.", "",
             facts.numbers.table().rstrip(), ""]
    if facts.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in facts.notes), ""]
    lines += ["## Files", "", *(f"- {f}" for f in facts.files), "",
              "## Use", "", "```bash", use_lines(model)[0], "```", "", "```python", "import portraitseg",
              f"seg = {use_lines(model)[1]}", 'alpha = seg.mask("photo.jpg")', "```", ""]
    return "\n".join(lines)
