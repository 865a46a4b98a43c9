"""Dask workers for a run's batches (``--workers N``, ``--cluster tcp://HOST:PORT``).

The workers read, decode, validate, hash and plan batches (``prepared.prepare_batch``); they
hold no database connection. This process takes their results in input order and decides
and loads them as it would its own. A worker that dies loses only results not taken yet:
Dask computes them again, on another worker, and they are the same. Results come back as
Arrow (``ArrowFrame``): in shared-memory files when every worker is on this host, else in
Dask's messages.

Dask is an extra (``pip install -e '.[dask]'`` from a checkout): it is imported only here, when a
run asks for workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.errors import ConfigError, PipelineError

# Where workers on this host leave their results for this process (None: in the messages).
SHARED_MEMORY = "/dev/shm" if Path("/dev/shm").is_dir() else None
# Seconds to wait for an existing scheduler to answer.
CONNECT_SECONDS = 10
# Batches each worker thread may have ready or in hand ahead of the one being loaded: enough
# to keep the workers busy while one batch loads, few enough to bound memory.
AHEAD_PER_THREAD = 2


@contextmanager
def dask_client(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """A client of a local cluster of ``workers`` processes (started and stopped here), of the
    scheduler at ``address``, or None when neither is asked for."""
    if not workers and not address:
        yield None
        return
    if workers and address:
        raise ConfigError("--workers starts a local cluster, --cluster uses an existing one: choose one")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--workers and --cluster need Dask: pip install 'distributed>=2025.1'") from None
    if address:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    with ExitStack() as cluster_and_client:
        cluster = cluster_and_client.enter_context(
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: two runs at once must not collide
                # A worker that loses the scheduler as the run stops logs it as an error, with a traceback:
                # what a worker must say reaches this process as its task's error.
                silence_logs=logging.CRITICAL,
                # One thread per worker process: Polars' own pool would compete with the others.
                env={"POLARS_MAX_THREADS": "1"},
                preload=[__name__],  # ``dask_setup``
            )
        )
        try:
            yield cluster_and_client.enter_context(Client(cluster))
        finally:
            # The run has stopped: a Ctrl-C more (the first asks to stop after the batches in
            # hand) would break off the closing and leave the workers behind.
            with _ctrl_c_ignored():
                cluster_and_client.close()


def dask_setup(worker: Any) -> None:
    """Dask runs this in each worker process of a local cluster as it starts (a preload).

    Ctrl-C in a terminal interrupts the whole process group: a worker it killed would lose the
    batches in hand, print its traceback, and leave this process waiting for results that do
    not come. The workers ignore it; this process stops the run after the batches in hand,
    then the cluster."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT in the block, where this thread may set how (the main thread, and a
    handler Python knows to put back)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def dask_in_order(client: Any) -> Callable[[Callable, Iterable[tuple]], Iterator]:
    """Run a function over argument tuples as tasks of ``client``'s cluster, a bounded number
    ahead, and give back the results in the order of the tuples."""
    ahead = AHEAD_PER_THREAD * max(sum(client.nthreads().values()), 1) + 1
    same_host = all(_loopback(address) for address in client.scheduler_info()["workers"])

    def in_order(function: Callable, arguments: Iterable[tuple]) -> Iterator:
        pending: deque = deque()
        # Workers on this host hand their results over in shared memory, as files this
        # process maps: through the loopback network, a 20,000-record batch (about 57 MB)
        # cost 0.33 core-seconds to send and receive, in files about half of that.
        folder = _shared_folder(SHARED_MEMORY) if same_host and SHARED_MEMORY else None
        try:
            for args in arguments:
                pending.append(client.submit(_handed_over, folder, function, *args, pure=False))
                if len(pending) >= ahead:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            client.cancel(list(pending))
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    return in_order


def _shared_folder(shared_memory: str) -> str:
    """A folder of this process in shared memory, after removing those of processes that died
    (a killed run cannot remove its own; what it holds would stay in memory)."""
    for folder in Path(shared_memory).glob("pipeline-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"pipeline-{os.getpid()}-", dir=shared_memory)


def _loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclasses.dataclass(frozen=True)
class _Failed:
    """A task's ``PipelineError`` (a broken input, say), handed back as its result: raised as a
    task's error, the worker would log it with its traceback before this process reports it."""

    error: PipelineError


def _handed_over(folder: str | None, function: Callable, *args) -> Any:
    """On a worker: ``function``'s result with its frames and tables as ``ArrowFrame``s."""
    try:
        result = function(*args)
    except PipelineError as exc:
        return _Failed(exc)
    return _converted(result, (pl.DataFrame, pa.Table), partial(ArrowFrame, folder=folder))


def _converted(value: Any, kind: type | tuple[type, ...], convert: Callable) -> Any:
    """``value`` with each ``kind`` inside its dataclasses, dicts, lists and tuples converted."""
    if isinstance(value, kind):
        return convert(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _converted(getattr(value, f.name), kind, convert) for f in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {key: _converted(item, kind, convert) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_converted(item, kind, convert) for item in value)
    return value


class ArrowFrame:
    """A Polars frame or an Arrow table on its way between processes, as Arrow: in a file of
    ``folder`` (shared memory, read without a copy) or in the message itself (Dask sends Arrow
    buffers as they are; Polars would first pickle a frame into one buffer, 0.3 s a batch)."""

    def __init__(self, data: pl.DataFrame | pa.Table, folder: str | None) -> None:
        self.polars = isinstance(data, pl.DataFrame)
        table = data.to_arrow() if self.polars else data
        self.path = None if folder is None else os.path.join(folder, uuid.uuid4().hex)
        self.table = None if self.path else table
        if self.path:
            with pa.OSFile(self.path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)

    def data(self) -> pl.DataFrame | pa.Table:
        table = self.table
        if self.path:
            with pa.memory_map(self.path) as source:
                table = pa.ipc.open_file(source).read_all()
            os.unlink(self.path)
        return pl.from_arrow(table, rechunk=False) if self.polars else table


def _result(future: Any) -> Any:
    from distributed import KilledWorker

    try:
        result = future.result()
    except KilledWorker as exc:
        raise PipelineError(
            f"the workers died again and again on one task ({exc}); see the workers' logs"
        ) from None
    if isinstance(result, _Failed):
        raise result.error
    return _converted(result, ArrowFrame, ArrowFrame.data)
