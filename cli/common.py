"""Helpers every command shares: one-line user errors, device choice, output folders."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click


class UserError(click.ClickException):
    """An error in what the user asked for: printed as one line, exit code 2."""

    exit_code = 2


def debugging() -> bool:
    """``unlearnx --debug`` (or ``UNLEARNX_DEBUG=1``): errors show their traceback."""
    return os.environ.get("UNLEARNX_DEBUG", "").lower() in ("1", "true", "yes", "on")


def _friendly(fn):
    """Turn errors from what the user asked for into one clear line instead of a trace: the library's
    ValueError/FileNotFoundError/FloatingPointError as they are; TypeError, OSError and RuntimeError (a
    wrong kind of value, an unwritable folder, torch refusing an input) with their kind named. ``--debug``
    shows the traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as exc:
            if debugging():
                raise
            raise UserError(str(exc)) from exc
        except (TypeError, OSError, RuntimeError) as exc:
            if debugging():
                raise
            if getattr(exc, "one_line", False):  # unlearnx.executor.RunFailed: a run's own error, named
                raise UserError(str(exc)) from exc
            raise UserError(f"{type(exc).__name__}: {_one_line(exc)} (unlearnx --debug shows where)") from exc

    return wrapper


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def make_console(stderr: bool = False):
    """A rich Console. Where the stream is no terminal (a log file, CI, a pipe) rich would assume 80
    columns and cut every table column to a few letters, so it gets 160 unless COLUMNS says otherwise."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=160 if wide else None)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"--device must be cpu, cuda or auto, not {name!r}")
    return torch.device(name)


DATA_HELP = ("Data source: 'digits' (default, embedded), a competition folder, an ImageFolder tree, "
             "cifar-10-batches-py, or torchvision:NAME:ROOT (cifar10, cifar100, svhn, fashion-mnist, mnist; files "
             "already under ROOT).")
MODEL_HELP = ("Model: resnet18, small, torchvision:NAME[:key=value,...], package.module:callable[:key=value,...] "
              "(called with num_classes and in_channels), or a TorchScript file. Default: small for digits, else "
              "resnet18.")
FORGET_HELP = "Forget set for sources without one: a fraction (0.1), 'classes:0,3' or 'groups:15'."
PRESET_HELP = ("Recipe starting point: 'published' (the sources' values), 'digits' (published with the changes "
               "the small digits demo needs; `unlearnx methods --details` lists them) or 'auto' (digits on the "
               "embedded digits, else published). --recipe and --set apply on top.")
# The same --preset on every command that builds a recipe.
preset_option = click.option("--preset", type=click.Choice(["auto", "published", "digits"]), default="auto",
                             show_default=True, help=PRESET_HELP)


compile_option = click.option(
    "--compile/--no-compile", "compile_choice", default=None,
    help="Run the methods' model calls compiled (torch.compile, TorchInductor): a one-time compile of 20-40 s, "
         "then faster steps. Default: on where it was measured faster (the small ResNet on CPU) and the runs "
         "are long or many enough to win the compile back; the report says why.")
verbose_option = click.option("--verbose", "-v", is_flag=True,
                              help="Also print the compiled graphs (first compiles and recompiles) and compile seconds.")


def describe_compile(enabled: bool, why: str, stats: dict | None = None, verbose: bool = False) -> str:
    """One line: whether the model calls were compiled, why, and what compiling cost (``stats``: the
    ``compile_seconds``, ``graphs_compiled`` and ``graph_breaks`` of the runs)."""
    line = f"compiled model calls: {'on' if enabled else 'off'} ({why})"
    if enabled and stats is not None:
        line += f"; {stats['compile_seconds']:.1f} s compiling, kept out of the run's seconds"
        if verbose:
            line += f"; {stats['graphs_compiled']} graph(s) compiled, {stats['graph_breaks']} graph break(s)"
    return line


def check_model_spec(spec: str | None, from_scratch: bool = False):
    """Parse --model before any work (a bad name, an unimportable factory, a missing file fail at once)."""
    if spec is None:
        return None
    from unlearnx.models import _factory, parse_model_spec

    parsed = parse_model_spec(spec)
    if parsed.kind == "factory":
        _factory(parsed)
    if from_scratch and not parsed.trains_from_scratch:
        raise UserError(f"--model {spec}: training needs a freshly initialised model, and a model file only holds "
                        "trained weights; give the model's factory instead")
    return parsed


def format_changes(changes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items())


def resolve_preset(preset: str, source_kind: str) -> str:
    from unlearnx.methods import preset_for

    return preset_for(source_kind) if preset == "auto" else preset


def describe_preset(method: str, preset: str) -> str | None:
    """One line saying which published values the preset changed, or None when it changed none."""
    from unlearnx.methods import preset_changes

    changes = preset_changes(method, preset)
    if not changes:
        return None
    return (f"recipe: {method}'s published values with the {preset} preset's changes: {format_changes(changes)} "
            "(--preset published: none)")


def refuse_overwrite(out: Path, force: bool, folder: bool = False) -> None:
    """Checked before any work: an existing output file, or non-empty output folder, needs --force.
    ``folder``: ``out`` must be a folder, so an existing file there is an error even with --force."""
    if folder and out.is_file():
        raise UserError(f"--out {out} is a file; it must be a folder (the run writes several files into it)")
    if out.exists() and not force and (out.is_file() or any(out.iterdir())):
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")


def remove_stale_outputs(out: Path, names) -> None:
    """With --force into an earlier run's folder: delete that run's outputs this run will not replace, so
    the folder never mixes two runs (e.g. an old model.pt2 beside a new report). Other files stay."""
    for name in names:
        (out / name).unlink(missing_ok=True)


def execution_options(fn):
    """--backend, --workers, --ray-address, --cpus-per-run, --gpus-per-run, --timing-runs on a command; the
    command receives them as one ``execution`` (:class:`unlearnx.executor.Execution`), checked up front."""
    options = [
        click.option("--backend", type=click.Choice(["serial", "process", "ray"]), default="serial",
                     show_default=True, help="Where runs execute: here one after another, local worker processes, "
                                             "or a Ray cluster (pip install 'unlearnx[ray]')."),
        click.option("--workers", type=int, default=None,
                     help="Runs at once (process: default cores / --cpus-per-run; ray: what the cluster fits)."),
        click.option("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to use: 'auto' or HOST:PORT (default: start a local one, loopback only)."),
        click.option("--cpus-per-run", type=float, default=1.0, show_default=True,
                     help="CPUs (and torch threads) per run."),
        click.option("--gpus-per-run", type=float, default=0.0, show_default=True,
                     help="GPUs per run on Ray; fractions pack several runs on one GPU (0.25: four per GPU)."),
        click.option("--timing-runs", type=int, default=3, show_default=True,
                     help="Runs of each kind timed alone (one at a time) for RTE and the time gate."),
    ]

    @functools.wraps(fn)
    def wrapper(*args, backend, workers, ray_address, cpus_per_run, gpus_per_run, timing_runs, **kwargs):
        from unlearnx.executor import Execution

        try:
            execution = Execution(backend=backend, workers=workers, ray_address=ray_address,
                                  cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                                  timing_runs=timing_runs).check()
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        return fn(*args, execution=execution, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def resolve_train_recipe(splits, name: str | None, sets, *, checkpoint=None, augment: bool = True,
                         option: str = "--recipe"):
    """``(recipe, name, why)``: the recipe that trains originals and retrained references — preset ``name``
    (default: the one chosen for the data, :func:`unlearnx.pipeline.train_recipe_choice`) with
    ``--set``-style overrides — its preset's name, and why that preset."""
    from unlearnx.methods import parse_overrides
    from unlearnx.methods.base import apply_overrides
    from unlearnx.pipeline import default_train_recipe, train_recipe_choice

    chosen, why = (name, f"Chosen with {option}.") if name else train_recipe_choice(splits, checkpoint)
    recipe = default_train_recipe(splits, checkpoint=checkpoint, preset=chosen, augment=augment)
    return apply_overrides(recipe, parse_overrides(sets), "training recipe"), chosen, why
