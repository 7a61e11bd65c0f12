"""``unlearnx bench``: fused vs pure PyTorch — op speed, and per method runtime and score."""
from __future__ import annotations

from pathlib import Path

import click

from .common import (FORGET_HELP, MODEL_HELP, UserError, _friendly, check_model_spec, execution_options,
                     make_console, preset_option, refuse_overwrite, resolve_device, resolve_preset, verbose_option)


@click.command()
@click.option("--ops", "do_ops", is_flag=True, help="Benchmark the fused ops against their PyTorch composites.")
@click.option("--methods", "methods_arg", default=None,
              help="Comma-separated method names, or 'all'. Default (with no --ops): scl,scl-bikl.")
@click.option("--data", default=None, help="Data source for the methods table (default: the embedded digits).")
@click.option("--forget", "forget_spec", default=None, help=FORGET_HELP)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Original model state_dict.")
@click.option("--model", "arch", default=None, help=MODEL_HELP)
@click.option("--runs", "-n", default=1, show_default=True,
              help="Runs per method and impl; with 3 or more, also the competition score against as many "
                   "cached retrained references (F is 0 by construction below 3; the competition used 512).")
@click.option("--device", default="auto", show_default=True)
@preset_option
@click.option("--ingredients", is_flag=True, help="Also time the steps between the two paths (resident data, "
                                                   "channels_last, bf16) and the compiled model (fused+compile) to "
                                                   "show each one's share.")
@click.option("--compile/--no-compile", "compile_choice", default=None,
              help="Add (or, with --ingredients, leave out) the fused+compile row: the method's model calls "
                   "compiled with torch.compile; its seconds exclude the one-time compile (compile_seconds).")
@click.option("--quick", is_flag=True, help="A few minutes on 2 CPU cores: digits, 4 runs, short op timings.")
@execution_options
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write FILE.json, plus FILE.md (tables) and FILE.png (score vs runtime) beside it.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--quiet", "-q", is_flag=True)
@verbose_option
@_friendly
def bench(do_ops, methods_arg, data, forget_spec, checkpoint, arch, runs, device, preset, ingredients, compile_choice,
          quick, execution, out, force, quiet, verbose):
    """Measure fused vs pure-PyTorch: op speed, and per method runtime and score.

    --backend applies to the retrained references the score needs; the timed method runs always run
    here, one at a time (they are the measurement)."""
    from unlearnx.bench.report import render, write_outputs
    from unlearnx.methods import METHODS
    from unlearnx.report import command_line, created_now, machine, source_commit, versions

    from .progress import RichProgress

    if out is not None and out.suffix != ".json":
        raise UserError("--out must end in .json (the .md and .png are written beside it)")
    if out is not None:
        refuse_overwrite(out, force)
    dev = resolve_device(device)
    if methods_arg is None and not do_ops:
        do_ops, methods_arg = True, "scl,scl-bikl"
    methods = []
    if methods_arg:
        methods = sorted(METHODS) if methods_arg == "all" else [m.strip() for m in methods_arg.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise UserError(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(sorted(METHODS))}")
    if quick:
        runs = max(runs, 4)
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}")
    from unlearnx.protocol import MIN_SCORE_RUNS

    check_model_spec(arch, from_scratch=runs >= MIN_SCORE_RUNS)  # the score's references train from scratch
    console = make_console(stderr=True)
    if methods:  # load (and so check) the data before the op timings, so a bad --data fails at once
        from unlearnx import data as data_mod

        kind = data_mod.detect_source(data)
        preset = resolve_preset(preset, kind)
        splits = data_mod.load(data, forget=forget_spec, checkpoint=checkpoint)
    result = {"command": command_line(), "created": created_now(), "source_commit": source_commit(),
              "machine": {**machine(), "device": str(dev), **{f"{k}_version": v for k, v in versions().items()}},
              "ops": [], "methods": []}

    if do_ops:
        from unlearnx.bench.ops import bench_ops

        console.print("timing the fused ops against their PyTorch composites ...")
        result["ops"] = bench_ops(device=dev.type, quick=quick)

    if methods:
        from unlearnx.bench.methods import add_speedups, bench_methods, cache_summary
        from unlearnx.executor import make_executor
        from unlearnx.models import describe_model
        from unlearnx.pipeline import default_train_recipe, original_model

        train_recipe = default_train_recipe(splits, checkpoint=checkpoint)
        with RichProgress(console, enabled=not quiet) as progress, make_executor(execution) as executor:
            original, arch, where = original_model(splits, checkpoint=checkpoint, arch=arch, device=dev,
                                                   progress=progress, recipe=train_recipe)
            console.print(f"original model: {where}")
            rows = bench_methods(splits, original, arch, methods, runs=runs, device=dev, ingredients=ingredients,
                                 train_recipe=train_recipe, progress=progress, preset=preset,
                                 executor=executor, compile=compile_choice)
            result["execution"] = executor.describe()
        result["methods"] = add_speedups(rows)
        result["cache"] = cache_summary(rows)
        result["preset"] = preset
        result["data"] = splits.summary()
        result["model"] = describe_model(arch, original)

    render(result, make_console())
    if verbose:
        for row in result["methods"]:
            if "graphs_compiled" in row:
                click.echo(f"{row['method']} ({row['impl']}): {row['graphs_compiled']} graph(s) compiled in "
                           f"{row['compile_seconds']:.1f} s over {row['runs']} run(s), "
                           f"{row['graph_breaks']} graph break(s)")
    if out is not None:
        for path in write_outputs(result, out):
            click.echo(f"wrote {path}")
