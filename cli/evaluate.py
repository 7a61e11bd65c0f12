"""``unlearnx evaluate``: the competition's multi-run protocol for one method."""
from __future__ import annotations

from pathlib import Path

import click

from .common import (FORGET_HELP, UserError, _friendly, describe_preset, make_console, preset_option,
                     refuse_overwrite, resolve_device, resolve_preset)


def _reuse_line(references: dict, unlearned: dict) -> str:
    return (f"cache: references {references['reused']} reused, {references['ran']} ran; unlearned runs "
            f"{unlearned['reused']} reused, {unlearned['ran']} ran (reused runs keep the seconds measured when "
            "they ran)")


@click.command()
@click.option("--method", "-m", default="scl", show_default=True, help="Method name (see `unlearnx methods`).")
@click.option("--data", default=None, help="Data source (default: the embedded digits).")
@click.option("--forget", "forget_spec", default=None, help=FORGET_HELP)
@click.option("--split-seed", default=0, show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Original model state_dict.")
@click.option("--model", "arch", default=None, help="resnet18 or small.")
@click.option("--runs", "-n", default=8, show_default=True,
              help="Unlearned runs and retrained references (512 reproduces the competition).")
@click.option("--seed", default=0, show_default=True, help="Run i uses seed SEED + i.")
@click.option("--device", default="auto", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe value.")
@preset_option
@click.option("--fused/--no-fused", default=True, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the JSON report here.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--quiet", "-q", is_flag=True)
@_friendly
def evaluate(method, data, forget_spec, split_seed, checkpoint, arch, runs, seed, device, sets, preset, fused, out, force,
             quiet):
    """Score METHOD with N unlearned runs against N retrained references (both cached on disk, resumable):
    mean ± std of every metric and the competition score."""
    import dataclasses

    from rich.table import Table

    from unlearnx import data as data_mod
    from unlearnx.methods import make_recipe, parse_overrides
    from unlearnx.pipeline import default_train_recipe, original_model
    from unlearnx.protocol import (MIN_SCORE_RUNS, comparable_timings, mean_std, retrained_references, score,
                                   unlearned_runs)
    from unlearnx.report import new_report, write_json_atomic

    from .progress import RichProgress

    kind = data_mod.detect_source(data)
    preset = resolve_preset(preset, kind)
    recipe = make_recipe(method, parse_overrides(sets), preset=preset)
    if runs < MIN_SCORE_RUNS:
        raise UserError(f"--runs must be at least {MIN_SCORE_RUNS} (with 2 runs the forget quality F is 0 by "
                        "construction)")
    if out is not None:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give the report file to write, e.g. {out / 'report.json'}")
        refuse_overwrite(out, force)
    dev = resolve_device(device)
    console = make_console(stderr=True)
    if note := describe_preset(method, preset):
        console.print(note)
    splits = data_mod.load(data, forget=forget_spec, seed=split_seed)
    with RichProgress(console, enabled=not quiet) as progress:
        original, arch, where = original_model(splits, checkpoint=checkpoint, arch=arch, device=dev,
                                               progress=progress)
        console.print(f"original model: {where}")
        train_recipe = default_train_recipe(splits)
        retrained = retrained_references(splits, arch, train_recipe, runs, device=dev, progress=progress)
        unlearned = unlearned_runs(original, splits, method, recipe, runs, fused=fused, device=dev, base_seed=seed,
                                   progress=progress)
    result = score(unlearned, retrained)
    metrics = {}
    for name, runset in (("unlearned", unlearned), ("retrained", retrained)):
        metrics[name] = {k: mean_std(getattr(runset, k)) for k in
                         ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia", "seconds")}
        # Seconds of runs read from the cache were measured by the process that ran them.
        metrics[name]["seconds"]["reused_runs"] = runset.cache_counts()["reused"]
    # RTE only from timings taken on this device under this torch.
    rte_problem = comparable_timings(unlearned, retrained, device=dev)
    rte = None if rte_problem else metrics["retrained"]["seconds"]["mean"] / metrics["unlearned"]["seconds"]["mean"]
    result["rte"] = rte
    if rte_problem:
        result["rte_unavailable"] = rte_problem
    report = new_report(seed=seed, data={**splits.summary(), "split_seed": split_seed}, method=method,
                        impl="fused" if fused and unlearned.native.all() else "pytorch", preset=preset,
                        recipe=dataclasses.asdict(recipe), arch=arch,
                        original_checkpoint=where, runs=runs, score=result, metrics=metrics,
                        mia_name="mia.loss_lr", train_recipe=dataclasses.asdict(train_recipe),
                        cache={"references": retrained.cache_counts(), "unlearned": unlearned.cache_counts()})
    table = Table(title=f"{method}: {runs} unlearned runs vs {runs} retrained references")
    table.add_column("metric")
    table.add_column("unlearned", justify="right")
    table.add_column("retrained", justify="right")
    for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia", "seconds"):
        u, r = metrics["unlearned"][key], metrics["retrained"][key]
        table.add_row(key, f"{u['mean']:.4f} ± {u['std']:.4f}", f"{r['mean']:.4f} ± {r['std']:.4f}")
    make_console().print(table)
    click.echo(f"forget quality F = {result['forget_quality']:.4f} (≈0.18 is the ceiling of a perfect unlearner "
               f"at N=512); score = {result['score']:.4f}; RTE = "
               + (f"{rte:.1f}x" if rte is not None else f"not computed ({rte_problem})"))
    click.echo(_reuse_line(retrained.cache_counts(), unlearned.cache_counts()))
    if out is not None:
        write_json_atomic(report, out)
        click.echo(f"wrote {out}")
    else:  # the runs are cached, so asking again with --out is quick
        click.echo("not saved: run the same command with --out FILE.json to write the report (runs are cached)")
