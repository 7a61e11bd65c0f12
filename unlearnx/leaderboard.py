"""Several methods scored against one set of retrained references: one row per method, a table, and
JSON / CSV / Markdown / PNG (score against seconds per run) files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .protocol import RunSet, mean_std, score

COLUMNS = ["method", "runs", "forget_quality", "score", "retain_accuracy_ratio", "test_accuracy_ratio", "mia",
           "forget_accuracy", "seconds", "seconds_alone", "rte"]


def leaderboard_row(method: str, unlearned: RunSet, retrained: RunSet) -> dict:
    """The competition score and its parts, MIA and forget accuracy (mean ± std over runs), seconds per
    run (all runs, and those timed alone) and RTE = retraining time / unlearning time, both timed alone."""
    row = {"method": method, **score(unlearned, retrained)}
    for key in ("mia", "forget_accuracy", "retain_accuracy", "test_accuracy", "seconds"):
        stats = mean_std(getattr(unlearned, key))
        row[key], row[f"{key}_std"] = stats["mean"], stats["std"]
    row["seconds_alone"] = float(np.mean(unlearned.timed_alone))
    row["rte"] = float(np.mean(retrained.timed_alone) / row["seconds_alone"]) if row["seconds_alone"] > 0 else float("nan")
    return row


def frame(rows: list[dict]):
    import pandas as pd

    table = pd.DataFrame(rows)
    return table[[c for c in COLUMNS if c in table.columns]] if len(table) else table


def render(rows: list[dict], console, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "F", "score", "retain ratio", "test ratio", "MIA", "forget acc", "s/run (alone)", "RTE"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in sorted(rows, key=lambda r: -r["score"]):
        table.add_row(r["method"], f"{r['forget_quality']:.4f}", f"{r['score']:.4f}",
                      f"{r['retain_accuracy_ratio']:.3f}", f"{r['test_accuracy_ratio']:.3f}",
                      f"{r['mia']:.3f} ± {r['mia_std']:.3f}",
                      f"{r['forget_accuracy']:.3f} ± {r['forget_accuracy_std']:.3f}",
                      f"{r['seconds']:.2f} ± {r['seconds_std']:.2f} ({r['seconds_alone']:.2f})", f"{r['rte']:.1f}x")
    console.print(table)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .bench.report import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["seconds_alone"] for r in rows], [r["score"] for r in rows])
    for r in rows:
        ax.annotate(r["method"], (r["seconds_alone"], r["score"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per unlearning run, timed alone (log)")
    ax.set_ylabel("competition score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def write(report: dict, out: Path) -> list[Path]:
    """``out`` (.json) plus the table as .csv and .md and the plot as .png beside it."""
    from .atomic import write_text
    from .report import markdown_table, write_json_atomic

    out = Path(out)
    write_json_atomic(report, out)
    rows = report["leaderboard"]
    table = frame(rows)
    written = [out]
    for suffix, text in ((".csv", table.to_csv(index=False)), (".md", _markdown(report, table, markdown_table))):
        path = out.with_suffix(suffix)
        write_text(path, text)
        written.append(path)
    png = out.with_suffix(".png")
    plot(rows, png, report.get("title", "leaderboard"))
    written.append(png)
    return written


def _markdown(report: dict, table, markdown_table) -> str:
    m, e = report.get("machine", {}), report.get("execution", {})
    setting = report.get("setting", {})
    head = (f"{report.get('title', '')}\n\nCommand: `{setting.get('command') or report.get('command')}`  \n"
            + (f"Commit: {setting['git_commit']}  \n" if "git_commit" in setting else "") +
            f"Machine: {m.get('gpu') or m.get('cpu', '?')} "
            f"({m.get('cores', '?')} cores); backend {e.get('backend')} with {e.get('workers')} workers; "
            f"RTE and s/run (alone) from the runs timed alone.\n\n")
    return head + markdown_table(table)
