"""One report schema for every command: what ran, on what, with which versions, and what came out.

``report.json`` (schema ``unlearnx.report/1``)::

    {"schema", "command", "created", "versions": {...}, "machine": {...}, "seed", "data": {source, sizes,
     forget, split_hash, ...}, "method", "impl", "recipe": {...}, "seconds",
     "timings": {phase: seconds},
     "original" | "unlearned" | "retrained": {"forget"|"retain"|"validation"|"test": {"loss", "accuracy"},
                                              "mia": float}}

Sections a run did not produce are absent. Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

SCHEMA = "unlearnx.report/1"
SPLIT_ORDER = ("retain", "forget", "validation", "test")


def versions() -> dict:
    import numpy
    import sklearn
    import torch
    import torchvision

    import unlearnx
    from unlearnx import ops

    return {
        "unlearnx": unlearnx.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "cuda": torch.version.cuda,
        "fused_ops": ops.fused_available(),
    }


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["unlearnx", *sys.argv[1:]])


def created_now() -> str:
    """UTC now, ISO 8601 to the second (reports' ``created``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def source_commit() -> str:
    """The git commit of the unlearnx source tree this runs from (a clone or an editable install; a
    trailing ``+dirty`` when it has uncommitted changes), else ``"unknown"`` (e.g. installed from a wheel)."""
    import subprocess

    folder = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def new_report(**fields) -> dict:
    report = {"schema": SCHEMA, "command": command_line(), "created": created_now(),
              "versions": versions(), "machine": machine()}
    report.update(fields)
    return report


def write_json_atomic(obj, path) -> None:
    """Write JSON to ``path`` via a temporary file and a rename, so readers never see half a file."""
    from .atomic import write_text

    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def metrics_frame(report: dict):
    """A pandas DataFrame: one row per (model, split) with loss and accuracy, plus MIA per model."""
    import pandas as pd

    rows = []
    for model in ("original", "unlearned", "retrained"):
        section = report.get(model)
        if not section:
            continue
        for split in SPLIT_ORDER:
            if split in section:
                rows.append({"model": model, "split": split, "loss": section[split]["loss"],
                             "accuracy": section[split]["accuracy"]})
        if "mia" in section:
            rows.append({"model": model, "split": "mia", "loss": float("nan"), "accuracy": section["mia"]})
    return pd.DataFrame(rows)


def export(report: dict, path) -> None:
    """Write the metrics table as CSV or Markdown, chosen by the file extension."""
    from .atomic import write_text

    path = Path(path)
    frame = metrics_frame(report)
    if path.suffix == ".csv":
        text = frame.to_csv(index=False)
    elif path.suffix in (".md", ".markdown"):
        text = markdown_table(frame)
    else:
        raise ValueError(f"cannot export to {path.suffix!r}: use .csv or .md")
    write_text(path, text)


def markdown_table(frame) -> str:
    """A DataFrame as a GitHub Markdown table (pandas' own needs the extra `tabulate` package)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4f}"
    return str(value)


def _short_direction(text: str) -> str:
    """MIA_INFO's sentence reduced to what fits a column; every attack's ideal is the retrained value."""
    for word in ("closer", "higher", "lower"):
        if text.startswith(word) or f" {word}" in text.split("=")[0]:
            return "closer to retrained" if word == "closer" else f"{word} (vs retrained)"
    return text


def render_unlearn_table(report: dict, console=None) -> None:
    """split x (loss, accuracy) for original, unlearned, retrained, then MIA and time."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    models = [m for m in ("original", "unlearned", "retrained") if report.get(m)]
    table = Table(title=f"{report.get('method', '')} on {report['data']['source']} "
                        f"({report['data'].get('forget', '')})")
    table.add_column("split")
    for m in models:
        table.add_column(f"{m} loss", justify="right")
        table.add_column(f"{m} acc", justify="right")
    for split in SPLIT_ORDER:
        if not any(split in report[m] for m in models):
            continue
        cells = []
        for m in models:
            entry = report[m].get(split)
            cells += [f"{entry['loss']:.4f}", f"{entry['accuracy']:.2%}"] if entry else ["", ""]
        table.add_row(split, *cells)
    mia_cells = []
    for m in models:
        mia_cells += ["", f"{report[m]['mia']:.3f}" if "mia" in report[m] else ""]
    table.add_row(f"MIA ({report.get('mia_name', 'mia')})", *mia_cells)
    console.print(table)
    if any("mias" in report[m] for m in models):
        from .metrics import MIA_INFO

        mias = Table(title="membership-inference attacks (forget set)")
        mias.add_column("attack")
        for m in models:
            mias.add_column(m, justify="right")
        mias.add_column("better unlearning ⇒")
        for name in report[models[0]].get("mias", {}):
            info = MIA_INFO.get(name, MIA_INFO.get(name.rsplit(".", 1)[0] + ".<feature>", {}))
            cells = [f"{report[m]['mias'][name]:.3f}" for m in models]
            mias.add_row(name, *cells, _short_direction(info.get("direction", "")))
        console.print(mias)
    timings = report.get("timings", {})
    if timings:
        console.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
