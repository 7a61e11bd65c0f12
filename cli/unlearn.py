"""``unlearnx unlearn``: the main job."""
from __future__ import annotations

from pathlib import Path

import click

from .common import (DATA_HELP, FORGET_HELP, MODEL_HELP, UserError, _friendly, check_model_spec, compile_option,
                     debugging, describe_compile, describe_preset, make_console, preset_option, refuse_overwrite,
                     remove_stale_outputs, resolve_device, resolve_preset, verbose_option)

# The files every run writes into --out, and those only an --export writes.
RUN_FILES = ("unlearned.pt", "report.json", "metrics.csv", "metrics.md")
EXPORT_FILES = ("model.pt2", "model.ts")


@click.command()
@click.option("--method", "-m", default="scl", show_default=True, help="Method name (see `unlearnx methods`).")
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--forget", "forget_spec", default=None, help=FORGET_HELP)
@click.option("--split-seed", default=0, show_default=True, help="Seed of the forget-set draw (same for every method).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Original model state_dict. Default: the competition folder's original_model.pth, else a model "
                   "trained once for this data and cached.")
@click.option("--model", "arch", default=None, help=MODEL_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: runs/<method>). Refused if it exists, unless --force.")
@click.option("--seed", type=int, default=None, help="Fix every random draw (default: a fresh random run).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe value, e.g. --set epochs=4.")
@preset_option
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path), default=None,
              help="Recipe overrides from a JSON or TOML file (--set wins).")
@click.option("--batch-size", default=64, show_default=True, help="Harness batch size of the three loaders.")
@click.option("--export", "export_format", type=click.Choice(["torchscript", "pt2"]), default=None,
              help="Also write the unlearned model as TorchScript (model.ts) or torch.export (model.pt2).")
@click.option("--fused/--no-fused", default=True, show_default=True,
              help="Fused C++/CUDA losses, or the pure-PyTorch composites as the notebooks wrote them.")
@click.option("--reference/--no-reference", default=None,
              help="Also train (once, cached) a retrained-on-retain reference for the report. Default: on for digits.")
@click.option("--no-augment", is_flag=True,
              help="Train the original and the reference without the source's light augmentation.")
@click.option("--mia", "mia_mode", type=click.Choice(["simple", "all"]), default="simple", show_default=True,
              help="simple: the starting kit's loss attack; all: also the SVC family and entropy-LR.")
@compile_option
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@verbose_option
@_friendly
def unlearn(method, data, forget_spec, split_seed, checkpoint, arch, out, seed, device, sets, preset, recipe_file,
            batch_size, export_format, fused, reference, no_augment, mia_mode, compile_choice, force, quiet, verbose):
    """Unlearn the forget set from the original model with METHOD; write unlearned.pt, report.json and the
    metrics table as metrics.csv and metrics.md.

    With no --data it uses scikit-learn's bundled digits and trains (and caches) the original model first.
    """
    import dataclasses
    import os

    from unlearnx import data as data_mod
    from unlearnx.api import seed_everything, splits_context
    from unlearnx.compiled import check_compilable, compile_mode, compiled, decide
    from unlearnx.methods import get_method, make_recipe, parse_overrides, run_method
    from unlearnx.models import copy_model, describe_model, save_state_dict
    from unlearnx.ops import impl_label, native_calls
    from unlearnx.pipeline import (Stopwatch, cached_model, default_train_recipe, describe_fit, describe_train_recipe,
                                   measure, original_fit, original_model, train_recipe_choice)
    from unlearnx.report import export, new_report, render_unlearn_table, write_json_atomic

    from .progress import RichProgress

    console = make_console(stderr=True)
    # Validate everything cheap before any work.
    get_method(method)
    kind = data_mod.detect_source(data)
    preset = resolve_preset(preset, kind)
    recipe = make_recipe(method, parse_overrides(sets), recipe_file, preset)
    out = out or Path("runs") / method
    refuse_overwrite(out, force, folder=True)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if checkpoint is not None and not checkpoint.is_file():
        raise UserError(f"--checkpoint {checkpoint} does not exist" if not checkpoint.exists() else
                        f"--checkpoint {checkpoint} is not a file")
    spec = check_model_spec(arch)
    if reference and spec is not None and not spec.trains_from_scratch:
        raise UserError(f"--reference: a retrained reference is trained from scratch, and --model {arch} is a file "
                        "holding trained weights only; give the model's factory instead, or --no-reference")
    seed_drawn = seed is None
    if seed_drawn:  # draw one and record it, so a run worth keeping can be repeated with --seed
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    dev = resolve_device(device)
    watch = Stopwatch()

    with watch("load data"):
        splits = data_mod.load(data, forget=forget_spec, seed=split_seed, checkpoint=checkpoint)
    train_recipe = default_train_recipe(splits, checkpoint=checkpoint, augment=not no_augment)
    if reference is None:  # a model file cannot be trained from scratch: no reference then
        reference = kind == "digits" and (spec is None or spec.trains_from_scratch)
    trains_original = checkpoint is None and splits.checkpoint is None
    if trains_original or reference:
        recipe_name, why = train_recipe_choice(splits, checkpoint)
        trained = " and ".join(n for n, on in (("original", trains_original), ("reference", reference)) if on)
        console.print(f"training recipe of the {trained}: {recipe_name}: {describe_train_recipe(train_recipe)}. {why}",
                      markup=False)
    if splits.held_out != "test":
        console.print(f"held-out split: {splits.held_out_description()}")

    if note := describe_preset(method, preset):
        console.print(note)
    with RichProgress(console, enabled=not quiet) as progress:
        with watch("original"):
            original, arch, original_source = original_model(splits, checkpoint=checkpoint, arch=arch,
                                                             device=dev, progress=progress, recipe=train_recipe)
        console.print(f"original model: {original_source}")
        compile_on, compile_why = decide(compile_choice, dev, arch, 1, len(splits.retain), splits.input_shape)
        if compile_on:
            check_compilable(original)  # one line now, not after the reference has trained
        from_checkpoint = checkpoint is not None or splits.checkpoint is not None
        cache = {"original": "checkpoint" if from_checkpoint else
                 ("reused" if original_source.endswith("(cached)") else "ran")}
        all_mias = mia_mode == "all"
        with watch("evaluate"):
            original_section = measure(original, splits, dev, all_mias)
        fit = original_fit(splits, original_section)
        for line in describe_fit(fit):
            console.print(("original: " if not line.startswith("warning") else "") + line, markup=False,
                          style="bold yellow" if line.startswith("warning") else None)

        retrained = None
        if reference:
            with watch("retrained reference"):
                retrained, path, cached = cached_model(splits, arch, train_recipe, on="retain", device=dev,
                                                       progress=progress)
                console.print(f"retrained reference: {'cached' if cached else 'trained and cached'} at {path}")
            cache["reference"] = "reused" if cached else "ran"

        model = copy_model(original)  # the original stays as it was, for the report
        generator = seed_everything(seed)
        ctx = splits_context(model, splits, batch_size=batch_size, fused=fused, generator=generator,
                             progress=progress)
        native_before = native_calls()
        with watch("unlearn"), compiled(model, compile_on) as compile_stats:
            run_method(model, ctx, method, recipe)
        if compile_on:  # the method's own time excludes compiling, which gets a phase of its own
            watch.timings["unlearn"] -= compile_stats.seconds
            watch.timings["compile"] = compile_stats.seconds
        console.print(describe_compile(compile_on, compile_why, compile_stats.as_dict(), verbose), markup=False)

    # The model is saved before anything else can fail: a finished run is never lost.
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_outputs(out, RUN_FILES + EXPORT_FILES)
    model_path = out / "unlearned.pt"
    save_state_dict(model, model_path)
    written = ["unlearned.pt"]
    try:
        exported = None
        if export_format:
            from unlearnx.export import export_model

            exported = export_model(model, export_format, out, splits.input_shape)
            written.append(exported.name)
        with watch("evaluate"):
            report = new_report(
                seed=seed, seed_drawn=seed_drawn, data={**splits.summary(), "split_seed": split_seed}, method=method,
                impl=impl_label(fused, native_before), preset=preset, recipe=dataclasses.asdict(recipe), arch=arch,
                model=describe_model(arch, original), original_checkpoint=original_source, original_fit=fit,
                device=str(dev), mia_name="mia.loss_lr", seconds=watch.timings["unlearn"], cache=cache,
                checkpoint=str(model_path), original=original_section, unlearned=measure(model, splits, dev, all_mias),
                compile={"enabled": compile_on, "why": compile_why, "mode": compile_mode() if compile_on else None,
                         **compile_stats.as_dict()})
            if trains_original or reference:
                report["train_recipe"] = {"name": train_recipe_choice(splits, checkpoint)[0],
                                          **dataclasses.asdict(train_recipe)}
            if retrained is not None:
                report["retrained"] = measure(retrained, splits, dev, all_mias)
        if exported is not None:
            report["export"] = str(exported)
    except Exception as exc:
        if debugging():
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"unlearning finished and the model is saved at {model_path}, but evaluating it failed: "
                        f"{type(exc).__name__}: {first}") from exc
    report["timings"] = dict(watch.timings)
    if "mia_unavailable" in report["unlearned"]:
        console.print(f"MIA not computed: {report['unlearned']['mia_unavailable']}")
    written += ["report.json", "metrics.csv", "metrics.md"]
    write_json_atomic(report, out / "report.json")
    export(report, out / "metrics.csv")
    export(report, out / "metrics.md")
    render_unlearn_table(report, make_console())
    click.echo(f"wrote {', '.join(written)} in {out}")
