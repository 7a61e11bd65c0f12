"""``unlearnx``: info, methods, train, unlearn, evaluate, bench, cache.

Heavy imports happen inside commands so ``unlearnx --help`` answers at once.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click


from .common import (DATA_HELP, FORGET_HELP, MODEL_HELP, UserError, _friendly, check_model_spec,  # noqa: E402
                     execution_options, format_changes, make_console, refuse_overwrite, resolve_device,
                     resolve_train_recipe)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="unlearnx")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug):
    """Machine unlearning for image classifiers: the NeurIPS 2023 competition's methods, fused ops,
    the competition metric and benchmarks."""
    if debug:
        import os

        os.environ["UNLEARNX_DEBUG"] = "1"


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
@click.option("--details", is_flag=True, help="Also print each method's source, recipe defaults, presets, what the "
                                             "sources leave uncertain and any deviation from them.")
@click.option("--json", "as_json", is_flag=True, help="Print the same provenance as JSON, one object per method.")
def methods(details, as_json):
    """List the unlearning methods: name, origin, one-line description."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from unlearnx.methods import METHODS, describe

    described = [describe(name) for name in sorted(METHODS)]
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    table = Table(title="unlearnx methods", show_lines=details)
    table.add_column("name", style="bold")
    table.add_column("origin")
    table.add_column("what it does")
    if details:
        table.add_column("provenance and recipe (defaults)")
    for d in described:
        row = [d["name"], escape(d["origin"]), escape(d["summary"])]
        if details:
            lines = [f"source: {escape(d['source'])}",
                     "recipe: " + escape(", ".join(f"{k}={v}" for k, v in d["recipe"].items()))]
            lines += [f"[cyan]{preset} preset: {escape(format_changes(changes))}[/cyan]"
                      for preset, changes in d["presets"].items() if changes]
            if d["uncertain"]:
                lines.append(f"[dim]uncertain: {escape(d['uncertain'])}[/dim]")
            lines.append("deviations: " + (escape("; ".join(d["deviations"])) if d["deviations"] else "none"))
            row.append("\n".join(lines))
        table.add_row(*row)
    make_console().print(table)


@main.command()
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--forget", "forget_spec", default=None, help=FORGET_HELP)
@click.option("--split-seed", default=0, show_default=True, help="Seed of the forget-set draw.")
@click.option("--model", "arch", default=None, help=MODEL_HELP)
@click.option("--recipe", "recipe_name", default=None,
              help="scratch | competition | starting-kit | digits (default: digits for digits, competition for a "
                   "competition folder with original_model.pth, else scratch).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (epochs=10).")
@click.option("--no-augment", is_flag=True, help="Train without the source's light augmentation (scratch recipe).")
@click.option("--on", type=click.Choice(["train", "retain"]), default="train", show_default=True,
              help="Train the original (train = retain + forget) or a retrained reference (retain only).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the state_dict (.pt); required unless --references.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--references", type=int, default=None, metavar="N",
              help="Instead: train the N retrained references `evaluate --runs N` scores against, into the cache "
                   "(resumable; with --backend they train in parallel).")
@execution_options
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@_friendly
def train(data, forget_spec, split_seed, arch, recipe_name, sets, no_augment, on, out, seed, device, references,
          execution, force):
    """Train an original model (or a retrained reference) and save its state_dict.

    Prints the recipe, and the model's train and held-out accuracy (with a warning when it barely beats
    always predicting the majority class). Interrupted runs resume: the training state is saved beside --out
    (OUT.partial) after every epoch, and the same command (same data split, model, recipe and seed) picks it up.
    """
    if references is not None:
        return _train_references(data, forget_spec, split_seed, arch, recipe_name, sets, no_augment, device,
                                 references, execution)
    if out is None:
        raise UserError("train needs --out FILE.pt (or --references N to fill the cache with references)")
    if execution.backend != "serial":
        raise UserError("--backend applies to --references (one model trains in this process)")
    import dataclasses
    import time

    from unlearnx import data as data_mod
    from unlearnx.models import default_arch, save_state_dict
    from unlearnx.pipeline import describe_fit, measure, original_fit, train_from_scratch, training_key
    from unlearnx.report import new_report, write_json_atomic
    from unlearnx.training import read_resume_state

    from .progress import RichProgress

    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the file to write, e.g. {out / 'model.pt'}")
    refuse_overwrite(out, force)
    check_model_spec(arch, from_scratch=True)
    dev = resolve_device(device)
    splits = data_mod.load(data, forget=forget_spec, seed=split_seed)
    arch = arch or default_arch(data_mod.detect_source(data))
    recipe, name, why = resolve_train_recipe(splits, recipe_name, sets, augment=not no_augment)
    _echo_train_recipe(recipe, name, sets, why)
    start = time.perf_counter()
    with RichProgress() as progress:
        # Training state is kept beside --out after every epoch: rerunning the command resumes.
        partial = out.with_name(out.name + ".partial")
        if read_resume_state(partial, training_key(splits, arch, recipe, on, seed)) is not None:
            click.echo(f"resuming from {partial}")
        elif partial.exists():
            click.echo(f"ignoring {partial}: it holds the training state of another configuration")
        model = train_from_scratch(splits, arch, recipe, on=on, seed=seed, device=dev, progress=progress,
                                   resume_path=partial)
    seconds = time.perf_counter() - start
    save_state_dict(model, out)
    partial.unlink(missing_ok=True)  # only now that the model is saved
    section = measure(model, splits, dev)
    fit = original_fit(splits, section)
    report = new_report(seed=seed, data=splits.summary(), arch=arch, recipe_name=name,
                        recipe=dataclasses.asdict(recipe), on=on, seconds=seconds, model=section, fit=fit,
                        checkpoint=str(out))
    write_json_atomic(report, out.with_suffix(".json"))
    click.echo(f"trained {arch} on {on} in {seconds:.1f}s -> {out} (report {out.with_suffix('.json')})")
    for split, entry in section.items():
        if split != "mia":
            click.echo(f"  {split:<10} loss {entry['loss']:.4f}  accuracy {entry['accuracy']:.2%}")
    for line in describe_fit(fit):
        click.echo(line)


def _echo_train_recipe(recipe, name: str, sets, why: str) -> None:
    from unlearnx.methods import parse_overrides
    from unlearnx.pipeline import describe_train_recipe

    changed = format_changes(parse_overrides(sets)) if sets else ""
    click.echo(f"training recipe: {name}{' with ' + changed if changed else ''}: {describe_train_recipe(recipe)}. "
               f"{why}")


def _train_references(data, forget_spec, split_seed, arch, recipe_name, sets, no_augment, device, n, execution):
    """The retrained references of ``evaluate --runs N`` (same data, model, recipe and cache keys)."""
    from unlearnx import data as data_mod
    from unlearnx.executor import make_executor
    from unlearnx.models import default_arch
    from unlearnx.protocol import retrained_references

    from .progress import RichProgress

    if n < 1:
        raise UserError(f"--references must be at least 1, got {n}")
    check_model_spec(arch, from_scratch=True)
    dev = resolve_device(device)
    splits = data_mod.load(data, forget=forget_spec, seed=split_seed)
    arch = arch or default_arch(splits.kind)
    recipe, name, why = resolve_train_recipe(splits, recipe_name, sets, augment=not no_augment)
    _echo_train_recipe(recipe, name, sets, why)
    with RichProgress() as progress, make_executor(execution) as executor:
        refs = retrained_references(splits, arch, recipe, n, device=dev, progress=progress, executor=executor)
        done = executor.describe()["nodes"]
    alone = sum(p["concurrent"] == 1 for p in refs.placement)
    click.echo(f"{refs.n} retrained references of {arch} ready in the cache ({sum(done.values())} trained now); "
               f"seconds per reference {refs.seconds.mean():.1f}"
               + (f" ({refs.timed_alone.mean():.1f} over the {alone} timed alone)" if alone else ""))


@main.group(invoke_without_command=True)
@click.pass_context
def cache(ctx):
    """List what the cache folder holds: kind, key, created, size, code fingerprint, stale or not.

    An entry is stale when the code, native build or torch that made it differ from the running ones:
    no run reads it again. The folder is $UNLEARNX_CACHE, else ~/.cache/unlearnx."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from unlearnx.cache_index import entries
    from unlearnx.fingerprint import code_fingerprint
    from unlearnx.pipeline import cache_root

    root = cache_root()
    found = entries(root)
    click.echo(f"cache folder {root}; code fingerprint of this install: {code_fingerprint()}")
    table = Table()
    for col in ("kind", "key", "created", "size", "fingerprint", "stale"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for e in found:
        table.add_row(e.kind, e.key, e.created, _human_size(e.size), e.fingerprint, "stale" if e.stale else "")
    make_console().print(table)
    total = sum(e.size for e in found)
    stale = [e for e in found if e.stale]
    stale_size = _human_size(sum(e.size for e in stale))
    click.echo(f"{len(found)} entries, {_human_size(total)}; {len(stale)} stale ({stale_size})")


@cache.command("clear")
@click.option("--stale", "stale_only", is_flag=True, help="Remove only the stale entries.")
@_friendly
def cache_clear(stale_only):
    """Remove the cache's entries (only unlearnx's own entries, only inside the cache folder)."""
    from unlearnx.cache_index import clear
    from unlearnx.pipeline import cache_root

    removed = clear(cache_root(), stale_only=stale_only)
    click.echo(f"removed {len(removed)} {'stale ' if stale_only else ''}entries "
               f"({_human_size(sum(e.size for e in removed))}) from {cache_root()}")


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


from .unlearn import unlearn  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .bench import bench  # noqa: E402

main.add_command(unlearn)
main.add_command(evaluate)
main.add_command(bench)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
