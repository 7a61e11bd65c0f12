"""Compiled model steps: a method's model calls through TorchInductor (``torch.compile``).

On the CPU the fused losses do not change a run's time: the model's convolutions and the per-step overhead
dominate. Compiling the model's forward (and with it, through AOTAutograd, its backward) fuses those, and
the code it generates is reused by every later model of the same architecture in the process, so in a
protocol of many runs the compile cost is paid once.

The model is compiled in place (``nn.Module.compile``): it stays the same object, with the same state dict
keys and submodules, so layer roles, ``conv1``/``fc`` look-ups and saving work unchanged, and copies a method
makes (teachers, probes) are compiled too. After the method the compiled call is removed again: evaluation
runs the eager model, so every metric is measured the same way with and without compilation.

Compile time is measured, not inferred: dynamo's and AOTAutograd's own timers (frames and lazily compiled
backward graphs) are read before and after, so a run's ``seconds`` can exclude it and reports show it apart.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

# Compile choices: "auto" decides by :func:`decide`; "on"/"off" force it.
CHOICES = ("auto", "on", "off")

# (device type, architecture) pairs where compiled methods were measured faster than eager ones
# (bench/results/compile-*.md; ``unlearnx bench --ingredients`` measures any other). Elsewhere "auto" stays
# eager: a ResNet-18 training step at 32 px on 2 CPU cores is slower compiled (0.73x, compile-step-cpu.md),
# and no GPU was measured.
MEASURED_FASTER = frozenset({("cpu", "small")})

# "auto" compiles when the work one process does (runs x retain examples x pixels per image) reaches this.
# Measured on 2 CPU cores with the small ResNet and an empty Inductor cache: compiling costs 30-40 s once
# per process (train, no-grad and dynamic-batch graphs); scl then saves 3.4 s of 8.3 s per run on 900 CIFAR-10
# images at 32 px (won back after ~9 runs, 8.6M) and 0.74 s of 2.4 s on 1,132 digits at 16 px (after ~50,
# 15M). One run on CIFAR-10's 45,000 retain images (46M) compiles; 8 runs on digits (2.3M) do not.
MIN_WORK_TO_PAY = 12_000_000

# Graphs a run may compile for one model call before dynamo falls back to eager: train/eval modes, with and
# without grad, and a static then a dynamic batch size of each.
RECOMPILE_LIMIT = 16


def decide(choice, device, arch: str | None, runs: int, retain_examples: int, input_shape) -> tuple[bool, str]:
    """``(compile, why)`` for ``choice`` (``True``/``False``/``None`` or one of :data:`CHOICES`): "auto"
    compiles where it was measured faster and the ``runs`` one process does (each process compiles once)
    pay the compile back."""
    if choice in (True, "on"):
        return True, "asked for (--compile)"
    if choice in (False, "off"):
        return False, "turned off (--no-compile)"
    if choice not in (None, "auto"):
        raise ValueError(f"compile must be one of {', '.join(CHOICES)} (or True/False/None), got {choice!r}")
    kind = torch.device(device).type
    if (kind, arch) not in MEASURED_FASTER:
        return False, f"auto: not measured faster for model {arch} on {kind} (--compile to try it)"
    pixels = 1
    for side in tuple(input_shape)[1:]:
        pixels *= int(side)
    work = runs * retain_examples * pixels
    if work < MIN_WORK_TO_PAY:
        return False, (f"auto: {runs} run(s) per process x {retain_examples} retain examples x {pixels} px is too "
                       f"little work to win back the one-time compile (--compile to force it)")
    return True, f"auto: measured faster for model {arch} on {kind}, and {runs} run(s) win back the compile"


def compile_mode() -> str:
    """torch.compile's mode for compiled runs: ``$UNLEARNX_COMPILE_MODE`` (e.g. ``reduce-overhead``, CUDA
    graphs for fixed-shape loops on a GPU), else ``default``."""
    return os.environ.get("UNLEARNX_COMPILE_MODE") or "default"


def check_compilable(model: nn.Module) -> None:
    """A clear line, before any work, for a model torch.compile cannot take."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("--compile needs a Python model: a TorchScript model cannot be compiled by "
                         "torch.compile (load its weights into the Python model class, or use --no-compile)")
    if not hasattr(torch.compiler, "set_stance"):  # layer roles are traced eagerly inside a compiled run
        raise ValueError(f"--compile needs torch 2.6 or newer, this is {torch.__version__} (or use --no-compile)")


@dataclass
class CompileStats:
    """What compiling cost during a run: ``seconds`` spent compiling (dynamo frames and backward graphs),
    ``graphs`` compiled (first compiles and recompiles; 0 when every graph was reused) and ``graph_breaks``
    (places dynamo had to leave the graph and run Python: each one costs speed, none costs correctness)."""

    seconds: float = 0.0
    graphs: int = 0
    graph_breaks: int = 0

    def as_dict(self) -> dict:
        return {"compile_seconds": self.seconds, "graphs_compiled": self.graphs, "graph_breaks": self.graph_breaks}


def _compile_seconds() -> float:
    from torch._dynamo.utils import calculate_time_spent

    return float(calculate_time_spent().get("total_wall_time", 0.0))


def _graphs() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


@contextlib.contextmanager
def compiled(model: nn.Module, enabled: bool = True, *, mode: str | None = None):
    """Within the block ``model`` (in place) runs compiled; yields the :class:`CompileStats` of the block,
    filled in when it ends. ``enabled=False`` yields empty stats and changes nothing. ``mode`` is
    torch.compile's (default: ``$UNLEARNX_COMPILE_MODE``, else torch's default)."""
    stats = CompileStats()
    if not enabled:
        yield stats
        return
    check_compilable(model)
    started = time.perf_counter()
    import torch._dynamo
    import torch._inductor.compile_fx  # noqa: F401  (2 s the first time: part of the compile cost)

    imported = time.perf_counter() - started
    seconds, graphs = _compile_seconds() - imported, _graphs()
    mode = mode or compile_mode()
    model.compile(mode=None if mode == "default" else mode)
    try:
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        with torch._dynamo.config.patch(**{limit: RECOMPILE_LIMIT}):
            yield stats
    finally:
        uncompile(model)
        stats.seconds = _compile_seconds() - seconds
        now = _graphs()
        stats.graphs, stats.graph_breaks = now[0] - graphs[0], now[1] - graphs[1]


def uncompile(model: nn.Module) -> nn.Module:
    """Remove compiled calls from ``model`` and its submodules (copies keep theirs until they are dropped)."""
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    return model
