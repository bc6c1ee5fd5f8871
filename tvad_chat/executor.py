"""Run tasks on local worker processes or on a Ray cluster, and hand back each result as it finishes.

`tvad scan`, `tvad eval run` and `tvad build-corpus` fan their work out through here (``--workers N``,
``--ray ADDRESS|auto``). A task is a module-level function and its arguments (both picklable). ``submit`` queues
it under a key of the caller's; ``next_result`` waits for any task to finish and returns its key and its value, or
a :class:`TaskFailure` when the task raised or its worker died, so one bad task never stops the others.
:func:`open_executor` picks the kind from the command line; :func:`run_tasks` maps a function over items with
either kind. ``threads`` is how many threads each task may use (OpenCV, torch): the cores of this machine shared
among the local workers, 1 on Ray (each task holds one of the cluster's CPUs).

Ray: ``ray.init(address=...)`` joins a running cluster (``host:port`` of `ray start --head`, or ``auto`` for the
cluster this machine belongs to); each task is a ``@ray.remote`` task of one CPU, so the cluster's CPUs set how
many run at once. Without an address a local Ray instance is started on 127.0.0.1 only (and shut down by
:meth:`RayExecutor.close`). Ray 2.60 resolves 127.0.0.1 to the machine's own address and then listens on every
interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before ray is imported (its switch for
single-machine use); the executor sets it for a local instance and for a cluster addressed on loopback (a driver
that joins one must take the loopback address as its own too), and checks where the started instance listens.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Protocol

from tvad_chat.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
RAY_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray takes 127.0.0.1 as this node's address


@dataclass
class TaskFailure:
    """A task that raised (its message) or whose worker died."""

    reason: str


class Executor(Protocol):
    slots: int  # tasks that run at once
    threads: int  # threads each task may use

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None: ...

    def next_result(self) -> tuple[Hashable, Any]: ...

    def pending(self) -> int: ...

    def close(self) -> None: ...


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def default_workers() -> int:
    """The core count this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalExecutor:
    """Worker processes on this machine (spawned: no thread or lock state is inherited from the caller)."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        """``threads`` per task: by default the cores shared among the workers."""
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.slots = workers
        self.threads = threads or max(1, default_workers() // workers)
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        self._futures: dict[Future, Hashable] = {}

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        self._futures[self._pool.submit(fn, *args)] = key

    def pending(self) -> int:
        return len(self._futures)

    def next_result(self) -> tuple[Hashable, Any]:
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        future = next(iter(done))
        key = self._futures.pop(future)
        try:
            return key, future.result()
        except Exception as exc:  # noqa: BLE001 - reported per task; BrokenProcessPool included
            log.debug("task %r failed:\n%s", key, "".join(traceback.format_exception(exc)))
            return key, TaskFailure(_describe(exc))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _on_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RayExecutor:
    """Tasks on a Ray cluster: ``address`` of a running one (``host:port`` or ``auto``), or None for a local one
    on 127.0.0.1 (no dashboard).

    ``init_options`` go to ``ray.init`` (a local instance: ``num_cpus``, ``_temp_dir``...).
    """

    def __init__(self, address: str | None, workers: int | None = None, **init_options: Any) -> None:
        local = address is None
        if local or _on_loopback(address):
            if "ray" in sys.modules and os.environ.get(RAY_LOOPBACK_SWITCH) != "0":
                raise ConfigError(f"ray was imported before {RAY_LOOPBACK_SWITCH}=0 was set, so a Ray instance on "
                                  f"{LOOPBACK} cannot be started or joined: set it in the environment")
            os.environ[RAY_LOOPBACK_SWITCH] = "0"
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs the ray package: pip install 'ray>=2.60,<3'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if local:
                options.update(_node_ip_address=LOOPBACK, include_dashboard=False)
            try:
                ray.init(address=address, **{**options, **init_options})
            except (ConnectionError, ValueError, RuntimeError, OSError) as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}; start one with "
                                  "`ray start --head` or check the address") from None
            if local and not _on_loopback(ray.get_runtime_context().gcs_address):
                where = ray.get_runtime_context().gcs_address
                ray.shutdown()
                raise ConfigError(f"the local Ray instance listened on {where}, not {LOOPBACK}")
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = workers or max(1, cpus)
        self.threads = 1
        self._remote: dict[Callable[..., Any], Any] = {}
        self._refs: dict[Any, Hashable] = {}

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=1)(fn)
        self._refs[remote.remote(*args)] = key

    def pending(self) -> int:
        return len(self._refs)

    def next_result(self) -> tuple[Hashable, Any]:
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        ref = ready[0]
        key = self._refs.pop(ref)
        try:
            return key, self._ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - RayTaskError (the task raised) or a lost worker
            cause = getattr(exc, "cause", None) or exc
            log.debug("task %r failed: %s", key, exc)
            return key, TaskFailure(_describe(cause))

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._started:
            self._ray.shutdown()


def open_executor(workers: int | None = None, ray: str | None = None) -> Executor:
    """``--ray ADDRESS|auto`` gives a :class:`RayExecutor`, else local processes (``--workers``, default: the cores)."""
    if ray is not None:
        return RayExecutor(ray, workers)
    return LocalExecutor(workers or default_workers())


def run_tasks(fn: Callable[..., Any], items: Iterable[Any], executor: Executor) -> Iterator[tuple[Any, Any]]:
    """(item, fn(item)) for every item as each finishes, a :class:`TaskFailure` in place of a failed result.

    At most twice ``executor.slots`` tasks are in flight, so a long list of items is not all queued at once.
    """
    numbered = enumerate(items)
    queued: dict[int, Any] = {}
    while True:
        while executor.pending() < 2 * executor.slots:
            number, item = next(numbered, (None, None))
            if number is None:
                break
            queued[number] = item
            executor.submit(number, fn, item)
        if not executor.pending():
            return
        key, value = executor.next_result()
        yield queued.pop(key), value
