"""How well each training recipe fits an original on each source: train accuracy, held-out accuracy, the
majority-class rate and seconds, for the competition's recipe against the from-scratch one (with and without
its light augmentation), on the embedded digits, competition-layout folders (8 classes, test.csv, no original
model: the test fixture's synthetic images, and CIFAR-10 images as raw 0-255 pixels) and a CIFAR-10 subset.

Sized for a few minutes on 2 CPU cores: the small model, short budgets (``--epochs``), ``--subset`` examples
per split of CIFAR-10. Times depend on what else the machine runs.

    python bench/train_recipes.py --out bench/results/train-recipes-cpu
"""
from __future__ import annotations

import argparse
import os
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from seed_table import shrink
from unlearnx import data
from unlearnx.atomic import write_text
from unlearnx.pipeline import describe_train_recipe, measure, original_fit, train_from_scratch, train_recipe_choice
from unlearnx.report import machine, markdown_table, source_commit, versions, write_json_atomic
from unlearnx.training import TrainRecipe

ROOT = Path(__file__).resolve().parents[1]


def competition_fixture(folder: Path) -> Path:
    """The test suite's face-age-like folder: 8 age groups, a test.csv, no original model."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures import write_competition_folder

    return write_competition_folder(folder, n_people=48, images_per_person=10, size=32, num_classes=8,
                                    with_checkpoint=False, test_fraction=0.2)


def cifar_competition_folder(splits, folder: Path, per_class: int, classes: int = 8) -> Path:
    """Natural images in the competition layout: CIFAR-10's first ``classes`` classes as "age groups",
    ``per_class`` training images a class in "people" of 10 (the first 3 people are the forget set), and
    ``per_class // 5`` validation and test images a class; no original model, no class weights file."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures import write_csv

    rows: dict[str, list[dict]] = {"retain.csv": [], "forget.csv": [], "validation.csv": [], "test.csv": []}
    person = 0
    for name, split, count in (("train", splits.train_split(), per_class), ("validation.csv", splits.validation,
                               per_class // 5), ("test.csv", splits.test, per_class // 5)):
        for label in range(classes):
            index = torch.nonzero(split.labels == label).flatten()[:count]
            for k, i in enumerate(index.tolist()):
                if k % 10 == 0:
                    person += 1
                target = name if name != "train" else ("forget.csv" if person <= 3 else "retain.csv")
                image_id = f"p{person}-{k % 10}"
                (folder / "images" / f"p{person}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(split.images[i].permute(1, 2, 0).numpy()).save(folder / "images" / f"p{person}" /
                                                                                f"{k % 10}.png")
                rows[target].append({"person_id": person, "age_group": label, "age": label, "image_id": image_id})
    for name, split_rows in rows.items():
        write_csv(folder / name, split_rows)
    return folder


def recipes(splits, epochs: int) -> dict[str, TrainRecipe]:
    """The source's default, the competition's, and the from-scratch recipe with and without augmentation."""
    from unlearnx.pipeline import default_train_recipe

    chosen = {"competition": TrainRecipe.preset("competition"),
              "scratch": default_train_recipe(splits, preset="scratch")}
    if splits.augmentation != "none":
        chosen["scratch, no augmentation"] = default_train_recipe(splits, preset="scratch", augment=False)
    if splits.kind == "digits":
        chosen = {"digits": TrainRecipe.preset("digits"), **chosen}
    if epochs:
        chosen = {name: dataclasses.replace(r, epochs=epochs) for name, r in chosen.items()}
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", default=os.environ.get("UNLEARNX_CIFAR10_JPEG") or "",
                        help="a CIFAR-10 ImageFolder tree (default: $UNLEARNX_CIFAR10_JPEG; skipped when absent)")
    parser.add_argument("--subset", type=int, default=3000, help="CIFAR-10: N random examples of each split")
    parser.add_argument("--per-class", type=int, default=250,
                        help="training images a class of the competition-layout copy of CIFAR-10")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every recipe (0: each recipe's own)")
    parser.add_argument("--arch", default="small")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    sources = {"digits": lambda: data.load("digits")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = competition_fixture(Path(tmp) / "ages")
        sources["competition layout (8 groups, fixture)"] = lambda: data.load(folder, cache_dir=False)
        if args.cifar and Path(args.cifar).is_dir():
            cifar = data.load(args.cifar, forget="0.1", seed=0)
            layout = cifar_competition_folder(cifar, Path(tmp) / "cifar-ages", args.per_class)
            sources[f"competition layout of CIFAR-10 images (8 classes, {args.per_class} a class)"] = (
                lambda: data.load(layout, cache_dir=False))
            sources[f"CIFAR-10 JPEG subset ({args.subset} per split)"] = lambda: shrink(cifar, args.subset)
        rows = []
        for source, load in sources.items():
            splits = load()
            default = train_recipe_choice(splits)[0]
            for name, recipe in recipes(splits, args.epochs).items():
                start = time.perf_counter()
                model = train_from_scratch(splits, args.arch, recipe, seed=0)
                seconds = time.perf_counter() - start
                fit = original_fit(splits, measure(model, splits))
                rows.append({"source": source, "recipe": name + (" (default)" if name == default else ""),
                             "epochs": recipe.epochs, "train_accuracy": round(fit["train_accuracy"], 4),
                             "held_out": fit["held_out"], "held_out_accuracy": round(fit["held_out_accuracy"], 4),
                             "majority_class_rate": round(fit["majority_class_rate"], 4),
                             "under_trained": fit["under_trained"], "seconds": round(seconds, 1),
                             "values": describe_train_recipe(recipe)})
                print(rows[-1], flush=True)

    result = {"command": " ".join(["python", *sys.argv]), "git_commit": source_commit(), "arch": args.arch,
              "machine": machine(), "versions": versions(), "rows": rows}
    if args.out:
        out = Path(args.out)
        write_json_atomic(result, out.with_suffix(".json"))
        import pandas as pd

        table = pd.DataFrame(rows).drop(columns=["values"])
        text = (f"# Training recipes per source\n\n`{result['command']}` at {result['git_commit'][:12]}, "
                f"{args.arch} model, on {result['machine']['cpu']} ({result['machine']['cores']} cores, shared "
                "with other jobs: seconds are indicative).\n\n" + markdown_table(table))
        write_text(out.with_suffix(".md"), text)
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
