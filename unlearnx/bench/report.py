"""Tables and the score-vs-runtime plot for ``unlearnx bench`` results."""
from __future__ import annotations

from pathlib import Path

OP_COLUMNS = ["op", "shape", "device", "dtype", "fused_ms", "reference_ms", "speedup", "gbps"]
METHOD_COLUMNS = ["method", "impl", "runs", "seconds", "speedup", "compile_seconds", "forget_accuracy",
                  "retain_accuracy", "test_accuracy", "mia", "score", "rte"]


def _frame(rows, columns):
    import pandas as pd

    frame = pd.DataFrame(rows)
    return frame[[c for c in columns if c in frame.columns]] if len(frame) else frame


def render(result: dict, console) -> None:
    from rich.table import Table

    for title, key, columns in (("fused ops vs PyTorch composites (forward + backward)", "ops", OP_COLUMNS),
                                ("methods: seconds per unlearning run and scores", "methods", METHOD_COLUMNS)):
        rows = result.get(key) or []
        if not rows:
            continue
        frame = _frame(rows, columns)
        table = Table(title=title)
        for col in frame.columns:
            table.add_column(col, justify="left" if col in ("op", "shape", "method", "impl", "device", "dtype")
                             else "right")
        for _, row in frame.iterrows():
            table.add_row(*[_cell(row[c]) for c in frame.columns])
        console.print(table)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return ""
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown(result: dict) -> str:
    from ..report import markdown_table

    m = result.get("machine", {})
    parts = [f"Machine: {m.get('gpu') or m.get('cpu', '?')} ({m.get('cores', '?')} cores), device {m.get('device')}, "
             f"torch {m.get('torch_version', '?')}\n"]
    if result.get("command"):
        parts.append(f"`{result['command']}` at commit {result.get('source_commit', 'unknown')}, "
                     f"{result.get('created', '')}\n")
    if result.get("ops"):
        parts.append("### Fused ops (forward + backward, median)\n\n" + markdown_table(_frame(result["ops"], OP_COLUMNS)))
    if result.get("methods"):
        note = ("" if not any("compile_seconds" in r for r in result["methods"]) else
                "`fused+compile`: `seconds` exclude the one-time compile, which `compile_seconds` gives (all runs).\n\n")
        parts.append("### Methods (seconds per unlearning run)\n\n" + note
                     + markdown_table(_frame(result["methods"], METHOD_COLUMNS)))
    return "\n".join(parts)


def plot(result: dict, path: Path) -> bool:
    """Score (or, without one, forget accuracy) against seconds per run; one point per method and impl."""
    rows = result.get("methods") or []
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_key = "score" if all("score" in r for r in rows) and any(r["score"] > 0 for r in rows) else "forget_accuracy"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for impl, marker in (("pytorch", "o"), ("resident", "s"), ("fused", "^"), ("fused+compile", "D")):
        pts = [r for r in rows if r["impl"] == impl]
        if not pts:
            continue
        ax.scatter([r["seconds"] for r in pts], [r[y_key] for r in pts], marker=marker, label=impl)
        for r in pts:
            ax.annotate(r["method"], (r["seconds"], r[y_key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per unlearning run (log)")
    ax.set_ylabel("competition score" if y_key == "score" else "forget accuracy")
    ax.set_title(f"unlearnx bench on {result.get('data', {}).get('source', '?')} ({result['machine'].get('device')})")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return True


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    from ..atomic import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> list[Path]:
    from ..atomic import write_text
    from ..report import write_json_atomic

    out = Path(out)
    write_json_atomic(result, out)
    written = [out]
    md = out.with_suffix(".md")
    write_text(md, markdown(result))
    written.append(md)
    png = out.with_suffix(".png")
    if plot(result, png):
        written.append(png)
    return written
