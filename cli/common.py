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


def _friendly(fn):
    """Turn the library's ValueError/FileNotFoundError into one clear line instead of a trace
    (``UNLEARNX_DEBUG=1`` shows the traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as exc:
            if os.environ.get("UNLEARNX_DEBUG"):
                raise
            raise UserError(str(exc)) from exc

    return wrapper


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
FORGET_HELP = "Forget set for sources without one: a fraction (0.1), 'classes:0,3' or 'groups:15'."
PRESET_HELP = ("Recipe starting point: 'published' (the sources' values), 'digits' (published with the changes "
               "the small digits demo needs; `unlearnx methods --details` lists them) or 'auto' (digits on the "
               "embedded digits, else published). --recipe and --set apply on top.")
# The same --preset on every command that builds a recipe.
preset_option = click.option("--preset", type=click.Choice(["auto", "published", "digits"]), default="auto",
                             show_default=True, help=PRESET_HELP)


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
