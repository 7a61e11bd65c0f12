"""One training step (forward, cross-entropy, backward, SGD) eager vs compiled (torch.compile, TorchInductor),
per architecture and input size: the measurement behind ``unlearnx.compiled.MEASURED_FASTER``.

Per case: the eager and compiled step's median seconds (after warm-up), the one-time compile seconds, and
the first step of a second model instance of the same architecture (compiled code is reused).

    python bench/compile_step.py --out bench/results/compile-step-cpu.json

Set ``TORCHINDUCTOR_CACHE_DIR`` to an empty folder to measure a cold compile, as on a fresh machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from unlearnx.atomic import write_text
from unlearnx.compiled import compiled
from unlearnx.models import build_model
from unlearnx.report import created_now, machine, markdown_table, source_commit, versions, write_json_atomic

CASES = (("small", 16), ("small", 32), ("resnet18", 32))


def _step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def _median_step(model, x, y, steps: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        _step(model, optimizer, x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _step(model, optimizer, x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(arch: str, size: int, batch: int, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    eager = _median_step(build_model(arch, 10, 3).to(device).train(), x, y, steps)
    model = build_model(arch, 10, 3).to(device).train()
    with compiled(model) as stats:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        _step(model, optimizer, x, y)  # compiles
    with compiled(model):
        fast = _median_step(model, x, y, steps)
    second = build_model(arch, 10, 3).to(device).train()
    with compiled(second) as reuse:
        start = time.perf_counter()
        _step(second, torch.optim.SGD(second.parameters(), lr=0.01), x, y)
        first_step = time.perf_counter() - start
    return {"arch": arch, "input": f"{size}x{size}", "batch": batch, "eager_ms": eager * 1e3,
            "compiled_ms": fast * 1e3, "speedup": eager / fast, "compile_seconds": stats.seconds,
            "graphs": stats.graphs, "new_instance_first_step_ms": first_step * 1e3,
            "new_instance_graphs": reuse.graphs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=None, help="FILE.json (and FILE.md beside it)")
    args = parser.parse_args(argv)
    rows = []
    for arch, size in CASES:
        row = measure(arch, size, args.batch, args.steps, args.device)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        rows.append(row)
    result = {"command": " ".join(["python", *sys.argv]),
              "created": created_now(), "source_commit": source_commit(),
              "machine": {**machine(), "device": args.device}, "versions": versions(), "steps": rows}
    if args.out:
        write_json_atomic(result, args.out)
        import pandas as pd

        table = markdown_table(pd.DataFrame(rows))
        write_text(args.out.rsplit(".", 1)[0] + ".md",
                   f"# Training step, eager vs compiled\n\n`{result['command']}` at {result['source_commit']}, "
                   f"{result['created']}; {result['machine']['cpu']} ({result['machine']['cores']} cores), "
                   f"torch {result['versions']['torch']}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
