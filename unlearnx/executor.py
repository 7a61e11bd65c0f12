"""Where the protocol's runs execute: ``serial`` (here, one after another), ``process`` (local worker
processes, started with spawn, each with its own torch thread count) or ``ray`` (tasks on a Ray cluster).

Every backend does the same thing with a run — :func:`unlearnx.protocol.perform_run` on a
:class:`~unlearnx.protocol.RunTask` — and hands its result back to the caller, which alone writes the run
store: the cache is the same wherever runs ran, and a driver stopped half way resumes where it stopped.
The data splits and the original model travel to each worker once (Ray: ``ray.put`` into the object store
once, so nodes need no shared filesystem), never with every task.

The first ``timing_runs`` runs of every batch run alone, one at a time, so that RTE and the
competition's time gate use undisturbed timings; each result records where it ran (``node``, ``worker``)
and how many runs ran at once (``concurrent``).

Faults: a worker process or node that dies has its runs retried (up to ``max_retries`` times); an exception
raised inside a run is not retried and comes back as :class:`RunFailed`, naming the method and run index.
Ctrl-C cancels what is still running; runs already finished have been handed back (and saved).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

BACKENDS = ("serial", "process", "ray")
RAY_INSTALL_HINT = "pip install 'unlearnx[ray]'"


class RunFailed(RuntimeError):
    """An exception inside a run (a method's NaN, a bad recipe): not retried, reported with its run."""

    one_line = True  # the CLI prints it as one line


@dataclass(frozen=True)
class Execution:
    """What the user asked for: backend, parallel runs, Ray cluster and resources per run."""

    backend: str = "serial"
    workers: int | None = None          # runs at once; default: process = cores / cpus_per_run, ray = cluster's
    ray_address: str | None = None      # None: start a local cluster (loopback only); "auto" or host:port
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    timing_runs: int = 3
    max_retries: int = 3

    def check(self) -> "Execution":
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_run <= 0:
            raise ValueError(f"--cpus-per-run must be positive, got {self.cpus_per_run}")
        if self.gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be 0 or more, got {self.gpus_per_run}")
        if self.timing_runs < 0:
            raise ValueError(f"--timing-runs must be 0 or more, got {self.timing_runs}")
        if self.backend != "ray" and (self.ray_address or self.gpus_per_run):
            raise ValueError("--ray-address and --gpus-per-run need --backend ray")
        if self.backend == "serial" and self.workers not in (None, 1):
            raise ValueError("--workers needs --backend process or ray (serial runs one at a time)")
        if self.backend == "ray":
            require_ray()
        return self

    def threads_per_run(self) -> int:
        return max(1, int(self.cpus_per_run))


def require_ray(import_it: bool = False):
    """Check (without importing it: its settings are read at import) that Ray is installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ValueError(f"--backend ray needs Ray, which is not installed: {RAY_INSTALL_HINT}")
    if import_it:
        import ray

        return ray
    return None


def make_executor(execution: Execution | None):
    """The executor for ``execution`` (a context manager: enter it to start workers or a cluster)."""
    execution = (execution or Execution()).check()
    if execution.backend == "serial":
        return SerialExecutor(execution)
    if execution.backend == "process":
        return ProcessExecutor(execution)
    return RayExecutor(execution)


def _with_placement(result: dict, node: str, worker: str, concurrent: int) -> dict:
    return {**result, "node": node, "worker": worker, "concurrent": int(concurrent)}


def _failure(task, exc: BaseException) -> RunFailed:
    return RunFailed(f"{task.describe()} failed: {type(exc).__name__}: {exc}")


class _Executor:
    """Shared bookkeeping: which runs ran where, for the report's ``execution`` block."""

    name = "serial"

    def __init__(self, execution: Execution | None = None):
        self.execution = execution or Execution()
        self.nodes: dict[str, int] = {}

    def __enter__(self):
        self._handle_sigterm()
        return self

    def __exit__(self, *exc):
        try:
            self.close()
        finally:
            self._restore_sigterm()
        return False

    def _handle_sigterm(self):
        """A SIGTERM (a batch system's stop, `kill`) unwinds like Ctrl-C, so workers or the cluster this
        executor started are stopped rather than orphaned."""
        import signal
        import threading

        self._previous_sigterm = None
        if self.name != "serial" and threading.current_thread() is threading.main_thread():
            def stop(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            self._previous_sigterm = signal.signal(signal.SIGTERM, stop)

    def _restore_sigterm(self):
        import signal

        if getattr(self, "_previous_sigterm", None) is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def close(self) -> None:
        pass

    def concurrency(self) -> int:
        return 1

    def _count(self, result: dict) -> None:
        self.nodes[result["node"]] = self.nodes.get(result["node"], 0) + 1

    def describe(self) -> dict:
        """The report's ``execution`` block."""
        e = self.execution
        return {"backend": self.name, "workers": self.concurrency(), "cpus_per_run": e.cpus_per_run,
                "gpus_per_run": e.gpus_per_run, "timing_runs": e.timing_runs, "ray_address": e.ray_address,
                "nodes": dict(sorted(self.nodes.items()))}

    def _split(self, tasks):
        """``(alone, together)``: the first ``timing_runs`` runs (by index) run one at a time."""
        k = self.execution.timing_runs
        return [t for t in tasks if t.index < k], [t for t in tasks if t.index >= k]

    def _finished(self, task, result, error, width, progress) -> dict:
        """A run came back: its own error stops the protocol (never retried); else count and record it."""
        if error is not None:
            raise RunFailed(f"{task.describe()} failed: {error}")
        result["concurrent"] = width
        self._count(result)
        progress.advance()
        return result


class SerialExecutor(_Executor):
    """Today's behaviour: every run in this process, one after another (all timed alone)."""

    def run(self, tasks, splits, original, *, progress=None, label="runs"):
        from .protocol import perform_run
        from .training import NullProgress

        progress = progress or NullProgress()
        node = socket.gethostname()
        for task in tasks:
            try:
                result = perform_run(task, splits, original, progress)
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:
                raise _failure(task, exc) from exc
            result = _with_placement(result, node, "driver", 1)
            self._count(result)
            yield task, result


# --- local worker processes ---------------------------------------------------------------------------

_WORKER_STATE: dict = {}


def _process_worker_init(payload: bytes, threads: int) -> None:
    import pickle

    import torch

    torch.set_num_threads(threads)
    _WORKER_STATE["splits"], _WORKER_STATE["original"] = pickle.loads(payload)  # noqa: S301 (our own bytes)


def _process_worker_run(task):
    from .protocol import perform_run

    try:
        result = perform_run(task, _WORKER_STATE["splits"], _WORKER_STATE["original"])
    except Exception as exc:  # an error inside the run: reported, never retried
        return task, None, f"{type(exc).__name__}: {exc}"
    return task, _with_placement(result, socket.gethostname(), f"pid{os.getpid()}", 0), None


class ProcessExecutor(_Executor):
    """Runs in ``workers`` spawned local processes; the splits and original go to each once."""

    name = "process"

    def __init__(self, execution: Execution | None = None):
        super().__init__(execution)
        self._pool = None
        self._payload = None

    def concurrency(self) -> int:
        if self.execution.workers:
            return self.execution.workers
        return max(1, int((os.cpu_count() or 1) // self.execution.cpus_per_run))

    def _start(self, splits, original):
        import multiprocessing
        import pickle
        from concurrent.futures import ProcessPoolExecutor

        if self._payload is None or self._payload[0] is not splits or self._payload[1] is not original:
            self.close()
            self._payload = (splits, original, pickle.dumps((splits, original), protocol=pickle.HIGHEST_PROTOCOL))
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.concurrency(), mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_process_worker_init,
                                             initargs=(self._payload[2], self.execution.threads_per_run()))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in processes:  # Ctrl-C or an error: do not wait for runs nobody will read
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=10)

    def run(self, tasks, splits, original, *, progress=None, label="runs"):
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        from .training import NullProgress

        progress = progress or NullProgress()
        progress.start(label, len(tasks))
        retries = {t.index: 0 for t in tasks}
        alone, together = self._split(tasks)
        try:
            for group, width in ((alone, 1), (together, min(self.concurrency(), max(1, len(together))))):
                queue = list(group)
                running = {}
                while queue or running:
                    pool = self._start(splits, original)
                    try:
                        while queue and len(running) < width:
                            future = pool.submit(_process_worker_run, queue[0])
                            running[future] = queue.pop(0)
                    except BrokenProcessPool:  # a worker died between runs: start a fresh pool
                        self.close()
                        continue
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        try:
                            task, result, error = future.result()
                        except BrokenProcessPool:  # a worker died: its runs (and the others in flight) go again
                            retries[task.index] += 1
                            if retries[task.index] > self.execution.max_retries:
                                raise RuntimeError(f"{task.describe()}: its worker process died "
                                                   f"{retries[task.index]} times; giving up") from None
                            queue.insert(0, task)
                            self.close()
                            continue
                        yield task, self._finished(task, result, error, width, progress)
        except BaseException:
            self.close()
            raise


# --- Ray ------------------------------------------------------------------------------------------------

def _ray_run(task, shared, threads: int):
    """The Ray task: ``shared`` is the object-store copy of (splits, original), fetched once per worker."""
    import ray
    import torch

    from .protocol import perform_run

    torch.set_num_threads(threads)
    splits, original = shared
    device = "cuda" if ray.get_gpu_ids() else task.device
    try:
        result = perform_run(task, splits, original, device=device)
    except Exception as exc:  # an error inside the run: reported to the driver as data, never retried
        return None, f"{type(exc).__name__}: {exc}"
    context = ray.get_runtime_context()
    return _with_placement(result, context.get_node_id()[:12], f"pid{os.getpid()}", 0), None


def local_cluster_environment() -> dict:
    """Environment for a Ray cluster this process starts: every socket on the loopback address only
    (Ray's local-only mode, as on macOS and Windows) and token authentication with a fresh token that
    never touches the disk."""
    import secrets

    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}


def _is_loopback(host: str) -> bool:
    import ipaddress

    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


class RayExecutor(_Executor):
    """Runs as Ray tasks. Without ``ray_address`` a local cluster is started (loopback only, token auth)
    and shut down on exit, Ctrl-C and errors; with one, the existing cluster is used and left running."""

    name = "ray"

    def __init__(self, execution: Execution | None = None, warn=None):
        super().__init__(execution)
        self._started = False
        self._shared = None
        self._remote = None
        self._saved_env: dict | None = None
        self._warn = warn or (lambda line: print(line, flush=True))

    def __enter__(self):
        super().__enter__()
        try:
            self._connect()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _connect(self):
        if self._started:
            return
        e = self.execution
        if e.ray_address is None:
            env = local_cluster_environment()
            self._saved_env = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
        ray = require_ray(import_it=True)
        import logging

        if e.ray_address is None:
            from ray._private import ray_constants
            from ray._raylet import Config

            # Both are read when ray is imported: refresh them in case it was imported before the env was set.
            ray_constants.ENABLE_RAY_CLUSTER = False
            Config.initialize("")
            cpus = e.workers * e.cpus_per_run if e.workers else None
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=e.ray_address, logging_level=logging.WARNING, log_to_driver=False,
                     configure_logging=False)
            self._warn_if_open()
        self._started = True

    def _warn_if_open(self):
        """One line when the cluster is reachable beyond this machine and this client has token auth off."""
        import ray

        gcs = ray.get_runtime_context().gcs_address
        host = gcs.rsplit(":", 1)[0]
        try:
            from ray._raylet import AuthenticationMode, get_authentication_mode

            token = get_authentication_mode() == AuthenticationMode.TOKEN
        except ImportError:
            token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
        if not _is_loopback(host) and not token:
            self._warn(f"warning: the Ray cluster at {gcs} has token authentication off: anyone who can reach it "
                       "can run code on it (start it with RAY_AUTH_MODE=token; see docs/scale.md)")

    def close(self) -> None:
        if not self._started:
            return
        import ray

        self._started = False
        self._shared = self._remote = None
        ray.shutdown()
        if self._saved_env is not None:
            for k, v in self._saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self._saved_env = None

    def concurrency(self) -> int:
        if self.execution.workers:
            return self.execution.workers
        if not self._started:
            return 1
        import ray

        resources = ray.cluster_resources()
        fits = [int(resources.get("CPU", 1) // self.execution.cpus_per_run)]
        if self.execution.gpus_per_run:
            fits.append(int(resources.get("GPU", 0) // self.execution.gpus_per_run))
        return max(1, min(fits))

    def run(self, tasks, splits, original, *, progress=None, label="runs"):
        from .training import NullProgress

        self._connect()
        import ray

        progress = progress or NullProgress()
        e = self.execution
        if self._shared is None or self._shared[0] is not splits or self._shared[1] is not original:
            self._shared = (splits, original, ray.put((splits, original)))
        if self._remote is None:
            # System failures (a worker or node lost) are retried; exceptions inside a run come back as data.
            self._remote = ray.remote(num_cpus=e.cpus_per_run, num_gpus=e.gpus_per_run,
                                      max_retries=e.max_retries, retry_exceptions=False)(_ray_run)
        shared_ref = self._shared[2]
        progress.start(label, len(tasks))
        alone, together = self._split(tasks)
        running = {}
        try:
            for group, width in ((alone, 1), (together, min(self.concurrency(), max(1, len(together))))):
                queue = list(group)
                while queue or running:
                    while queue and len(running) < width:
                        task = queue.pop(0)
                        running[self._remote.remote(task, shared_ref, e.threads_per_run())] = task
                    done, _ = ray.wait(list(running), num_returns=1)
                    for ref in done:
                        task = running.pop(ref)
                        try:
                            result, error = ray.get(ref)
                        except ray.exceptions.RayError as exc:
                            raise RuntimeError(f"{task.describe()}: lost after {e.max_retries} retries "
                                               f"({type(exc).__name__})") from None
                        yield task, self._finished(task, result, error, width, progress)
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
