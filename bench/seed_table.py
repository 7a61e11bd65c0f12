"""Reproduce the seed project's table on CIFAR-10 / ResNet-18 with a random 10% forget set:
original, retrained, scl, scl-bikl and grad-ascent rows with forget/retain/validation/test loss and
accuracy, the starting kit's MIA, the competition score over ``--runs`` runs, and seconds.

Sized for one 10-minute GPU command with the defaults (starting-kit SGD recipe shortened to
``--train-epochs``, 3 runs per side: the score needs 3 or more, since F is 0 by construction at 2).
On a CPU use ``--subset`` to shrink every split.

    python bench/seed_table.py --data PATH/cifar10-jpeg --device cuda --out bench/results/seed-table-h100
"""
from __future__ import annotations

import argparse
import os
import copy
import dataclasses
import sys
import time
from pathlib import Path

import torch

from unlearnx import data
from unlearnx.api import seed_everything, splits_context
from unlearnx.methods import make_recipe, run_method
from unlearnx.pipeline import measure, train_from_scratch
from unlearnx.protocol import MIN_SCORE_RUNS, RunSet, run_summary, score
from unlearnx.atomic import write_text
from unlearnx.report import machine, markdown_table, versions, write_json_atomic
from unlearnx.training import TrainRecipe

METHODS = ("scl", "scl-bikl", "grad-ascent")


def shrink(splits, n):
    """``n`` random examples of every split (``n/10`` of the forget set), for CPU smoke runs."""
    if not n:
        return splits
    g = torch.Generator().manual_seed(0)
    pick = lambda s, k: s.subset(torch.randperm(len(s), generator=g)[:k])  # noqa: E731  (every class)
    cut = lambda s: pick(s, min(n, len(s))) if s is not None else None  # noqa: E731
    return dataclasses.replace(splits, retain=cut(splits.retain), forget=pick(splits.forget, max(1, n // 10)),
                               validation=cut(splits.validation), test=cut(splits.test), forget_index=None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("UNLEARNX_CIFAR10_JPEG"),
                        help="a CIFAR-10 JPEG tree (ImageFolder layout; default: $UNLEARNX_CIFAR10_JPEG)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=3,
                        help="unlearned runs per method and retrained models (the score needs >= 3)")
    parser.add_argument("--train-epochs", type=int, default=12)
    parser.add_argument("--subset", type=int, default=0, help="keep N random examples of each split (N/10 forget)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast + channels_last for the methods (GPU)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("--data PATH/cifar10-jpeg is needed (or set UNLEARNX_CIFAR10_JPEG)")

    device = torch.device(args.device)
    splits = shrink(data.load(args.data, forget="0.1", seed=0), args.subset)
    recipe = TrainRecipe.preset("starting-kit", epochs=args.train_epochs, batch_size=256)
    rows, timings = [], {}

    start = time.perf_counter()
    original = train_from_scratch(splits, "resnet18", recipe, on="train", seed=0, device=device)
    timings["train original"] = time.perf_counter() - start
    rows.append({"model": "original", **flatten(measure(original, splits, device)), "seconds": timings["train original"]})

    retrained = []
    for i in range(args.runs):
        start = time.perf_counter()
        model = train_from_scratch(splits, "resnet18", recipe, on="retain", seed=100 + i, device=device)
        seconds = time.perf_counter() - start
        retrained.append({**run_summary(model, splits, device), "seconds": seconds})
        if i == 0:
            rows.append({"model": "retrained", **flatten(measure(model, splits, device)), "seconds": seconds})
    references = RunSet.from_results(retrained)

    for method in METHODS:
        recipe_m = make_recipe(method)
        results, first = [], None
        for i in range(args.runs):
            model = copy.deepcopy(original)
            if args.bf16:
                model = model.to(memory_format=torch.channels_last)
            ctx = splits_context(model, splits, fused=True, generator=seed_everything(i), channels_last=args.bf16,
                                 amp_dtype=torch.bfloat16 if args.bf16 else None)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run_method(model, ctx, method, recipe_m)
            if device.type == "cuda":
                torch.cuda.synchronize()
            results.append({**run_summary(model, splits, device), "seconds": time.perf_counter() - start})
            if first is None:
                first = measure(model, splits, device)
        runset = RunSet.from_results(results)
        rows.append({"model": method, **flatten(first), "seconds": float(runset.seconds.mean()),
                     "score": score(runset, references)["score"] if args.runs >= MIN_SCORE_RUNS else float("nan")})

    import pandas as pd

    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        result = {"machine": {**machine(), "device": str(device), **versions()}, "args": vars(args),
                  "data": splits.summary(), "train_recipe": dataclasses.asdict(recipe), "rows": rows,
                  "timings": timings}
        write_json_atomic(result, Path(args.out).with_suffix(".json"))
        m = result["machine"]
        write_text(Path(args.out).with_suffix(".md"),
            f"CIFAR-10 / ResNet-18, forget 10%, {args.runs} runs; {m.get('gpu') or m['cpu']}, torch {m['torch']}\n\n"
            + markdown_table(frame))
    return 0


def flatten(section: dict) -> dict:
    out = {}
    for split, entry in section.items():
        if split == "mia":
            out["mia"] = entry
        else:
            out[f"{split}_loss"], out[f"{split}_acc"] = entry["loss"], entry["accuracy"]
    return out


if __name__ == "__main__":
    sys.exit(main())
