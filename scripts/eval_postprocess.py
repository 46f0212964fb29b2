"""Effect of each post-processing option on mIoU / boundary F1 (docs/postprocess.md).

The model runs once per image; every PostprocessConfig variant is applied to the same low-res
probability and scored with ``portraitseg.metrics`` exactly as ``portraitseg eval`` does
(prediction = alpha >= 0.5 vs truth >= 0.5, ignore pixels excluded, counts summed over the set).

    .venv/bin/python scripts/eval_postprocess.py --data ../shared/data/vikram_val \
        --data ../shared/data/ccp_person --json /tmp/pp_eval.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from portraitseg.data import open_dataset
from portraitseg.inference import Segmenter
from portraitseg.metrics import Aggregate, image_metrics
from portraitseg.postprocess import PostprocessConfig, apply

# Plain bilinear upsampling, nothing else (every flag explicit: the defaults may change).
NONE = PostprocessConfig(guided=False, keep_largest=False, open_size=0, close_size=0, blur_size=0,
                        smoothstep=None)
VARIANTS: dict[str, PostprocessConfig] = {
    "none (bilinear)": NONE,
    "guided upsample": replace(NONE, guided=True),
    "blur 9": replace(NONE, blur_size=9),
    "smoothstep 0.3-0.7": replace(NONE, smoothstep=(0.3, 0.7)),
    "keep-largest": replace(NONE, keep_largest=True),
    "open 5": replace(NONE, open_size=5),
    "close 5": replace(NONE, close_size=5),
    "open 5 + close 5": replace(NONE, open_size=5, close_size=5),
    "guided + keep-largest (default)": replace(NONE, guided=True, keep_largest=True),
    "guided + keep-largest + open/close 5": replace(NONE, guided=True, keep_largest=True, open_size=5,
                                                     close_size=5),
    "all (guided, largest, open/close 5, blur 9, smoothstep)": replace(
        NONE, guided=True, keep_largest=True, open_size=5, close_size=5, blur_size=9, smoothstep=(0.3, 0.7)
    ),
}


def evaluate_variants(segmenter: Segmenter, data: str, split: str | None) -> dict[str, dict[str, float]]:
    dataset = open_dataset(data, split)
    aggs = {name: Aggregate() for name in VARIANTS}
    for sample in dataset:
        prob = segmenter.lowres_prob(sample.image)
        truth = sample.target >= 0.5
        for name, cfg in VARIANTS.items():
            alpha = apply(prob, sample.image, cfg)
            aggs[name].add(image_metrics(alpha >= 0.5, truth, sample.ignore))
    return {
        name: {**agg.over_all_pixels(), "n_images": agg.n_images,
               "mean_boundary_f1": agg.mean_per_image()["boundary_f1"]}
        for name, agg in aggs.items()
    }


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    sets = list(results)
    head = "| variant | " + " | ".join(f"{s} mIoU | {s} boundary F1" for s in sets) + " |"
    sep = "|---|" + "---:|---:|" * len(sets)
    rows = [
        f"| {name} | " + " | ".join(
            f"{results[s][name]['miou']:.4f} | {results[s][name]['boundary_f1']:.4f}" for s in sets
        ) + " |"
        for name in VARIANTS
    ]
    return "\n".join([head, sep, *rows])


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    parser.add_argument("--split", default="val.txt", help="split file in each folder (default: val.txt)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    segmenter = Segmenter(args.model, backend=args.backend, threads=1)
    results = {}
    for data in args.data:
        split = args.split if (Path(data) / args.split).is_file() else None
        results[Path(data).name] = evaluate_variants(segmenter, data, split)
        print(f"{data}: {results[Path(data).name]['none (bilinear)']['n_images']} images", flush=True)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
