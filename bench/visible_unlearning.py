"""A benchmark where unlearning is visible: an original model that memorises its training set, so its
forget-set accuracy stands well above that of models retrained without the forget set, and methods can
be told apart from doing nothing.

On the embedded digits a retrained model still classifies the forget set perfectly, so no method can beat
``finetune``-as-nothing there. Here: a class-balanced subset of CIFAR-10 from an ImageFolder tree (linked,
not copied), the small ResNet trained on it without augmentation (SGD 0.1, batch 32, 30 epochs: it fits
its training set far beyond what it generalises), the same recipe for the retrained references, then ``unlearnx evaluate --methods ...`` against as many retrained references. Every step is cached and
resumable: run the same command again after an interruption and it continues.

    python bench/visible_unlearning.py --cifar PATH/cifar10-jpeg --per-class 200 --runs 8 \\
        --backend process --workers 2 --out bench/results/visible-cifar10-subset.json

PATH/cifar10-jpeg is a CIFAR-10 ImageFolder tree (train/<class>/*.jpg, test/<class>/*.jpg). The script
stops with a clear line if the original's forget-set accuracy is not at least --min-gap points above the
retrained models' (the setting would not show unlearning).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from unlearnx import leaderboard
from unlearnx.atomic import write_text
from unlearnx.report import source_commit

DEFAULT_METHODS = "scl,scl-bikl,grad-ascent,msg,ct,finetune,neggrad-plus,scrub,retrain"


def make_subset(cifar: Path, dest: Path, per_class: int, test_per_class: int) -> Path:
    """``dest/train/<class>/`` with the first ``per_class`` images of each class (sorted names), and
    ``dest/test/<class>/`` with ``test_per_class``: symlinks, made once."""
    marker = dest / ".complete"
    if marker.exists():
        if json.loads(marker.read_text()) != [str(cifar.resolve()), per_class, test_per_class]:
            raise SystemExit(f"{dest} holds another subset; choose another --work folder")
        return dest
    for split, count in (("train", per_class), ("test", test_per_class)):
        root = cifar / split
        if not root.is_dir():
            raise SystemExit(f"--cifar {cifar}: no {split}/ folder (expected an ImageFolder tree)")
        for klass in sorted(p.name for p in root.iterdir() if p.is_dir()):
            files = sorted(f for f in os.listdir(root / klass) if not f.startswith("."))[:count]
            target = dest / split / klass
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                link = target / name
                if not link.exists():
                    link.symlink_to((root / klass / name).resolve())
    write_text(marker, json.dumps([str(cifar.resolve()), per_class, test_per_class]))
    return dest


def unlearnx(*args) -> None:
    command = [sys.executable, "-m", "unlearnx.cli.main", *map(str, args)]
    print("$ unlearnx " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=Path, required=True, help="CIFAR-10 ImageFolder tree (train/, test/)")
    parser.add_argument("--per-class", type=int, default=200, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="held-out images per class")
    parser.add_argument("--forget", default="0.1", help="forget set (as unlearnx --forget)")
    parser.add_argument("--train-recipe", default="starting-kit", help="recipe of the original and the references")
    parser.add_argument("--train-set", default="batch_size=32,epochs=30", help="its overrides, comma-separated")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--backend", default="process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-gap", type=float, default=10.0, help="forget accuracy points, original over retrained")
    parser.add_argument("--work", type=Path, default=None, help="subset and original model (default: beside --out)")
    parser.add_argument("--out", type=Path, required=True, help="leaderboard FILE.json (.csv, .md, .png beside it)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        raise SystemExit(f"{args.out} already exists; pass --force to overwrite it")
    work = args.work or args.out.with_name(args.out.stem + "-work")
    start = time.perf_counter()
    data = make_subset(args.cifar, work / "cifar10-subset", args.per_class, args.test_per_class)
    original = work / "original.pt"
    common = ["--data", data, "--forget", args.forget, "--model", "small"]
    sets = [s for s in args.train_set.split(",") if s]
    recipe = ["--recipe", args.train_recipe, *[a for s in sets for a in ("--set", s)]]
    if not original.exists():  # `train` resumes from original.pt.partial after an interruption
        unlearnx("train", *common, *recipe, "--out", original)
    # The references first (they are shared by every method): the same recipe, cached under the same keys.
    execution = ["--backend", args.backend, "--workers", args.workers]
    unlearnx("train", *common, *recipe, "--references", args.runs, *execution)
    trained = json.loads(original.with_suffix(".json").read_text())["model"]
    unlearnx("evaluate", "--methods", args.methods, *common, "--checkpoint", original, "--runs", args.runs,
             "--train-recipe", args.train_recipe, *[a for s in sets for a in ("--train-set", s)],
             *execution, "--out", args.out, *(["--force"] if args.force else []))
    report = json.loads(args.out.read_text())
    report["setting"] = {"command": " ".join(["python", *sys.argv]), "git_commit": source_commit(),
                         "original": trained, "min_gap_points": args.min_gap}
    leaderboard.write(report, args.out)  # the same files again, now with the setting and commit
    original_forget = trained["forget"]["accuracy"]
    retrained_forget = report["references"]["forget_accuracy"]["mean"]
    gap = 100 * (original_forget - retrained_forget)
    print(f"forget-set accuracy: original {original_forget:.1%}, retrained {retrained_forget:.1%} "
          f"(gap {gap:.1f} points); {time.perf_counter() - start:.0f} s in this invocation")
    if gap < args.min_gap:
        print(f"the gap is below --min-gap {args.min_gap}: this setting does not show unlearning", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
