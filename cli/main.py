"""``unlearnx``: info, methods, train, unlearn, evaluate, bench.

Heavy imports happen inside commands so ``unlearnx --help`` answers at once.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click


from .common import (DATA_HELP, FORGET_HELP, MODEL_HELP, _friendly, check_model_spec, format_changes,  # noqa: E402
                     make_console, refuse_overwrite, resolve_device)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="unlearnx")
def main():
    """Machine unlearning for image classifiers: the NeurIPS 2023 competition's methods, fused ops,
    the competition metric and benchmarks."""


@main.command()
def info():
    """Versions, build flags and which native backends were compiled."""
    import json

    import torch

    import unlearnx
    from unlearnx import ops
    from unlearnx.report import machine, versions

    click.echo(f"unlearnx {unlearnx.__version__}")
    for key, value in versions().items():
        click.echo(f"  {key:<14} {value}")
    click.echo("machine:")
    for key, value in machine().items():
        click.echo(f"  {key:<14} {value}")
    click.echo(f"  cuda available {torch.cuda.is_available()}")
    from unlearnx.pipeline import cache_root

    click.echo(f"cache: {cache_root()} (trained models, decoded images; set UNLEARNX_CACHE to move it)")
    click.echo("native ops:")
    click.echo(f"  fused available {ops.fused_available()}")
    for backend, built in ops.backends().items():
        click.echo(f"  {backend:<14} {'compiled' if built else 'not compiled'}")
    from unlearnx import _ext

    build = _ext.build_info()
    if build:
        click.echo("build configuration:")
        click.echo("  " + json.dumps(build, indent=2).replace("\n", "\n  "))
    if _ext.load_error():
        click.echo(f"extension not loaded: {_ext.load_error()}")


@main.command()
@click.option("--details", is_flag=True, help="Also print each recipe's defaults, the digits preset's changes and what "
                                             "the sources leave uncertain.")
def methods(details):
    """List the unlearning methods: name, origin, one-line description."""
    from rich.table import Table

    from unlearnx.methods import METHODS

    table = Table(title="unlearnx methods", show_lines=details)
    table.add_column("name", style="bold")
    table.add_column("origin")
    table.add_column("what it does")
    if details:
        table.add_column("recipe (defaults)")
    for name in sorted(METHODS):
        info = METHODS[name]
        row = [name, info.origin, info.summary]
        if details:
            recipe = info.default_recipe()
            text = ", ".join(f"{k}={v}" for k, v in recipe.as_dict().items())
            if recipe.digits_demo:
                text += f"\n[cyan]digits preset: {format_changes(recipe.digits_demo)}[/cyan]"
            if recipe.uncertain:
                text += f"\n[dim]uncertain: {recipe.uncertain}[/dim]"
            row.append(text)
        table.add_row(*row)
    make_console().print(table)


@main.command()
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--forget", "forget_spec", default=None, help=FORGET_HELP)
@click.option("--split-seed", default=0, show_default=True, help="Seed of the forget-set draw.")
@click.option("--model", "arch", default=None, help=MODEL_HELP)
@click.option("--recipe", "recipe_name", default=None,
              help="competition | starting-kit | digits (default: digits for digits, else competition).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (epochs=10).")
@click.option("--on", type=click.Choice(["train", "retain"]), default="train", show_default=True,
              help="Train the original (train = retain + forget) or a retrained reference (retain only).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the state_dict (.pt).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@_friendly
def train(data, forget_spec, split_seed, arch, recipe_name, sets, on, out, seed, device, force):
    """Train an original model (or a retrained reference) and save its state_dict.

    Interrupted runs resume: the training state is saved beside --out (OUT.partial) after every epoch.
    """
    import dataclasses
    import time

    from unlearnx import data as data_mod
    from unlearnx.methods import parse_overrides
    from unlearnx.methods.base import apply_overrides
    from unlearnx.models import default_arch, save_state_dict
    from unlearnx.pipeline import default_train_recipe, measure, train_from_scratch
    from unlearnx.report import new_report, write_json_atomic
    from unlearnx.training import TrainRecipe

    from .progress import RichProgress

    refuse_overwrite(out, force)
    check_model_spec(arch, from_scratch=True)
    dev = resolve_device(device)
    splits = data_mod.load(data, forget=forget_spec, seed=split_seed)
    arch = arch or default_arch(data_mod.detect_source(data))
    recipe = TrainRecipe.preset(recipe_name) if recipe_name else default_train_recipe(splits)
    recipe = apply_overrides(recipe, parse_overrides(sets), "training recipe")
    start = time.perf_counter()
    with RichProgress() as progress:
        # Training state is kept beside --out after every epoch: rerunning the command resumes.
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            click.echo(f"resuming from {partial}")
        model = train_from_scratch(splits, arch, recipe, on=on, seed=seed, device=dev, progress=progress,
                                   resume_path=partial)
    seconds = time.perf_counter() - start
    save_state_dict(model, out)
    section = measure(model, splits, dev)
    report = new_report(seed=seed, data=splits.summary(), arch=arch, recipe=dataclasses.asdict(recipe), on=on,
                        seconds=seconds, model=section, checkpoint=str(out))
    write_json_atomic(report, out.with_suffix(".json"))
    click.echo(f"trained {arch} on {on} in {seconds:.1f}s -> {out} (report {out.with_suffix('.json')})")
    for split, entry in section.items():
        if split != "mia":
            click.echo(f"  {split:<10} loss {entry['loss']:.4f}  accuracy {entry['accuracy']:.2%}")


from .unlearn import unlearn  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .bench import bench  # noqa: E402

main.add_command(unlearn)
main.add_command(evaluate)
main.add_command(bench)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
