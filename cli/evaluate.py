"""``unlearnx evaluate``: the competition's multi-run protocol for one method, or a leaderboard of several
methods against one shared set of retrained references."""
from __future__ import annotations

from pathlib import Path

import click

from .common import (DATA_HELP, FORGET_HELP, MODEL_HELP, UserError, _friendly, check_model_spec, compile_option,
                     describe_compile, describe_preset, execution_options, make_console, preset_option,
                     refuse_overwrite, resolve_device, resolve_preset, resolve_train_recipe, verbose_option)


def _reuse_line(references: dict, unlearned: dict) -> str:
    return (f"cache: references {references['reused']} reused, {references['ran']} ran; unlearned runs "
            f"{unlearned['reused']} reused, {unlearned['ran']} ran (reused runs keep the seconds measured when "
            "they ran)")


def compile_summary(enabled: bool, why: str, runsets: dict) -> dict:
    """The report's ``compile`` block: whether and why, and compiling's seconds and graphs over every run done
    now (per method too; reused runs keep what they recorded), which each run's ``seconds`` exclude."""
    from unlearnx.compiled import compile_mode

    per_method = {m: r.compile_totals() for m, r in runsets.items()}
    totals = {name: sum(v[name] for v in per_method.values()) for name in next(iter(per_method.values()))}
    return {"enabled": enabled, "why": why, "mode": compile_mode() if enabled else None, **totals,
            "methods": per_method}


def _rte(unlearned, retrained, device) -> tuple[float | None, str | None]:
    """RTE from runs timed alone, and only from timings taken on this device under this torch."""
    from unlearnx.protocol import comparable_timings

    problem = comparable_timings(unlearned, retrained, device=device)
    if problem:
        return None, problem
    return float(retrained.timed_alone.mean() / unlearned.timed_alone.mean()), None


@click.command()
@click.option("--method", "-m", default="scl", show_default=True, help="Method name (see `unlearnx methods`).")
@click.option("--methods", "methods_arg", default=None,
              help="Comma-separated methods scored against the same references: one leaderboard table "
                   "(with --out also FILE.csv, FILE.md and FILE.png, score vs seconds per run).")
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--forget", "forget_spec", default=None, help=FORGET_HELP)
@click.option("--split-seed", default=0, show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Original model state_dict.")
@click.option("--model", "arch", default=None, help=MODEL_HELP)
@click.option("--runs", "-n", default=8, show_default=True,
              help="Unlearned runs and retrained references (512 reproduces the competition).")
@click.option("--seed", default=0, show_default=True, help="Run i uses seed SEED + i.")
@click.option("--device", default="auto", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe value.")
@preset_option
@click.option("--fused/--no-fused", default=True, show_default=True)
@click.option("--train-recipe", default=None,
              help="Recipe of the original (when trained here) and the retrained references: scratch | competition | "
                   "starting-kit | digits (default: digits for digits, competition for a competition folder with "
                   "original_model.pth, else scratch); use the one the original was trained with.")
@click.option("--train-set", "train_sets", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the references' training recipe (epochs=60).")
@compile_option
@execution_options
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the JSON report here.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--quiet", "-q", is_flag=True)
@verbose_option
@_friendly
def evaluate(method, methods_arg, data, forget_spec, split_seed, checkpoint, arch, runs, seed, device, sets, preset,
             fused, train_recipe, train_sets, compile_choice, execution, out, force, quiet, verbose):
    """Score METHOD with N unlearned runs against N retrained references (both cached on disk, resumable):
    mean ± std of every metric and the competition score. --backend process|ray runs them in parallel."""
    import dataclasses

    from unlearnx import data as data_mod
    from unlearnx.compiled import check_compilable, decide
    from unlearnx.executor import make_executor
    from unlearnx.methods import METHODS, make_recipe, parse_overrides
    from unlearnx.pipeline import describe_train_recipe, original_model
    from unlearnx.protocol import MIN_SCORE_RUNS, retrained_references, unlearned_runs
    from unlearnx.models import describe_model

    from .progress import RichProgress

    methods = [m.strip() for m in methods_arg.split(",") if m.strip()] if methods_arg else [method]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(sorted(METHODS))}")
    if len(set(methods)) != len(methods):
        raise UserError("--methods names a method twice")
    kind = data_mod.detect_source(data)
    preset = resolve_preset(preset, kind)
    recipes = {m: make_recipe(m, parse_overrides(sets), preset=preset) for m in methods}
    if runs < MIN_SCORE_RUNS:
        raise UserError(f"--runs must be at least {MIN_SCORE_RUNS} (with 2 runs the forget quality F is 0 by "
                        "construction)")
    leaderboard = methods_arg is not None
    if out is not None:
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give the report file to write, e.g. {out / 'report.json'}")
        if leaderboard and out.suffix != ".json":
            raise UserError("--out must end in .json with --methods (the .csv, .md and .png are written beside it)")
        refuse_overwrite(out, force)
    check_model_spec(arch, from_scratch=True)  # the retrained references are trained from scratch
    dev = resolve_device(device)
    console = make_console(stderr=True)
    for m in methods:
        if note := describe_preset(m, preset):
            console.print(note)
    splits = data_mod.load(data, forget=forget_spec, seed=split_seed, checkpoint=checkpoint)
    train_recipe, recipe_name, why = resolve_train_recipe(splits, train_recipe, train_sets, checkpoint=checkpoint,
                                                          option="--train-recipe")
    trained = "references" if checkpoint is not None or splits.checkpoint is not None else "original and references"
    console.print(f"training recipe of the {trained}: {recipe_name}: {describe_train_recipe(train_recipe)}. {why}",
                  markup=False)
    unlearned = {}
    with RichProgress(console, enabled=not quiet) as progress:
        original, arch, where = original_model(splits, checkpoint=checkpoint, arch=arch, device=dev,
                                               progress=progress, recipe=train_recipe)
        console.print(f"original model: {where}")
        with make_executor(execution) as executor:
            # Each worker process compiles once and then runs its share of every method's runs.
            per_process = -(-runs * len(methods) // max(1, executor.concurrency()))
            compile_on, compile_why = decide(compile_choice, dev, arch, per_process, len(splits.retain),
                                             splits.input_shape)
            if compile_on:
                check_compilable(original)  # before the references train
            retrained = retrained_references(splits, arch, train_recipe, runs, device=dev, progress=progress,
                                             executor=executor)
            for m in methods:
                unlearned[m] = unlearned_runs(original, splits, m, recipes[m], runs, fused=fused, device=dev,
                                              base_seed=seed, progress=progress, executor=executor,
                                              compile=compile_on)
            execution_block = executor.describe()
    compile_block = compile_summary(compile_on, compile_why, unlearned)
    console.print(describe_compile(compile_on, compile_why, compile_block, verbose), markup=False)
    placement = {"retrained": retrained.placement, **{m: r.placement for m, r in unlearned.items()}}
    # "fused" only when a kernel of unlearnx._C ran in every run.
    native = all(r.native.all() for r in unlearned.values())
    common = dict(seed=seed, data={**splits.summary(), "split_seed": split_seed},
                  impl="fused" if fused and native else "pytorch", device=dev, model=describe_model(arch, original), preset=preset, arch=arch, original_checkpoint=where,
                  runs=runs, mia_name="mia.loss_lr",
                  train_recipe={"name": recipe_name, **dataclasses.asdict(train_recipe)},
                  execution=execution_block, placement=placement, compile=compile_block)
    if leaderboard:
        common.pop("device")
        _leaderboard(methods, recipes, unlearned, retrained, common, out, dev)
        return
    dev = common.pop("device")
    _single(method, recipes[method], unlearned[method], retrained, common, out, dev)


def _single(method, recipe, unlearned, retrained, common, out, device):
    import dataclasses

    from rich.table import Table

    from unlearnx.protocol import mean_std, score
    from unlearnx.report import new_report, write_json_atomic

    runs = common["runs"]
    result = score(unlearned, retrained)
    metrics = {}
    for name, runset in (("unlearned", unlearned), ("retrained", retrained)):
        metrics[name] = {k: mean_std(getattr(runset, k)) for k in
                         ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia", "seconds")}
        metrics[name]["seconds_alone"] = mean_std(runset.timed_alone)
        # Seconds of runs read from the cache were measured by the process that ran them.
        metrics[name]["seconds"]["reused_runs"] = runset.cache_counts()["reused"]
    rte, rte_problem = _rte(unlearned, retrained, device)
    result["rte"] = rte
    if rte_problem:
        result["rte_unavailable"] = rte_problem
    report = new_report(method=method, recipe=dataclasses.asdict(recipe), score=result, metrics=metrics,
                        cache={"references": retrained.cache_counts(), "unlearned": unlearned.cache_counts()},
                        **common)
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
    _echo_execution(common["execution"])
    if out is not None:
        write_json_atomic(report, out)
        click.echo(f"wrote {out}")
    else:  # the runs are cached, so asking again with --out is quick
        click.echo("not saved: run the same command with --out FILE.json to write the report (runs are cached)")


def _leaderboard(methods, recipes, unlearned, retrained, common, out, device):
    import dataclasses

    from unlearnx import leaderboard
    from unlearnx.protocol import mean_std
    from unlearnx.report import new_report

    rows = [leaderboard.leaderboard_row(m, unlearned[m], retrained) for m in methods]
    for row in rows:
        rte, problem = _rte(unlearned[row["method"]], retrained, device)
        if problem:
            row["rte"], row["rte_unavailable"] = float("nan"), problem
    cache = {"references": retrained.cache_counts(), "unlearned": {m: r.cache_counts() for m, r in unlearned.items()}}
    references = {k: mean_std(getattr(retrained, k)) for k in
                  ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia", "seconds")}
    references["seconds_alone"] = mean_std(retrained.timed_alone)
    title = (f"{len(methods)} methods on {Path(common['data']['source']).name}: {common['runs']} runs each vs "
             f"{common['runs']} retrained references")
    report = new_report(methods=methods, recipes={m: dataclasses.asdict(r) for m, r in recipes.items()},
                        leaderboard=rows, references=references, title=title, cache=cache, **common)
    leaderboard.render(rows, make_console(), title)
    click.echo(f"retrained references: forget accuracy {references['forget_accuracy']['mean']:.3f}, "
               f"test accuracy {references['test_accuracy']['mean']:.3f}, "
               f"{references['seconds_alone']['mean']:.1f} s each timed alone")
    _echo_execution(common["execution"])
    if out is not None:
        for path in leaderboard.write(report, out):
            click.echo(f"wrote {path}")
    else:
        click.echo("not saved: run the same command with --out FILE.json to write the report (runs are cached)")


def _echo_execution(block):
    if block["backend"] != "serial":
        nodes = ", ".join(f"{node}: {n}" for node, n in block["nodes"].items()) or "all runs were cached"
        click.echo(f"backend {block['backend']}, {block['workers']} at once; runs done now per node: {nodes}")
