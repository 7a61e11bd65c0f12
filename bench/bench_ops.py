"""Fused ops vs composite PyTorch; prints a table and writes bench/results/ops-<device>.json.

    .venv/bin/python bench/bench_ops.py [--device cpu|cuda] [--quick] [--min-run-time S]
"""
import argparse
import datetime as dt
import os
from pathlib import Path

import torch

from unlearnx import _ext
from unlearnx.bench.ops import bench_ops, copy_bandwidth_gbps
from unlearnx.report import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="competition shapes only, short runs")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads while timing (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/ops-<device>.json)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    bandwidth = copy_bandwidth_gbps(args.device)
    rows = bench_ops(device=args.device, quick=args.quick, min_run_time=args.min_run_time, num_threads=args.threads)
    header = f"{'op':<15} {'shape':<44} {'fused ms':>10} {'ref ms':>10} {'speedup':>8} {'GB/s':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['op']:<15} {r['shape']:<44} {r['fused_ms']:>10.4f} {r['reference_ms']:>10.4f} "
              f"{r['speedup']:>7.2f}x {r.get('gbps', ''):>7}")
    print(f"device copy bandwidth: {bandwidth:.1f} GB/s (read + write)")
    result = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "machine": machine(),
        "torch": torch.__version__,
        "fused_available": _ext.has_ops(),
        "build": {k: _ext.build_info().get(k) for k in ("torch", "build_cuda", "openmp", "cxx_flags")},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "copy_bandwidth_gbps": round(bandwidth, 2),
        "threads": args.threads,
        "note": "forward+backward for the losses, medians of torch.utils.benchmark blocked_autorange; "
                "reference = the notebooks' composite PyTorch (unlearnx.ops.reference) or topk + normal_",
        "rows": rows,
    }
    suffix = "" if args.threads == 1 else f"-{args.threads}threads"
    out = args.out or Path(__file__).resolve().parent / "results" / f"ops-{args.device}{suffix}.json"
    from unlearnx.atomic import write_json

    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
