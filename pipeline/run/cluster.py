"""Dask workers for a run's batches (``--workers N``, ``--cluster tcp://HOST:PORT``).

The workers read, decode, validate, hash and plan batches (``prepared.prepare_batch``); they
hold no database connection. This process takes their results in input order and decides
and loads them as it would its own. A worker that dies loses only results not taken yet:
Dask computes them again, on another worker, and they are the same.

Dask is an extra (``pip install 'memory-pipeline[dask]'``): it is imported only here, when a
run asks for workers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.errors import ConfigError, PipelineError

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
        raise ConfigError("--workers and --cluster need Dask: pip install 'memory-pipeline[dask]'") from None
    if address:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            # One thread per worker process: Polars' own pool would compete with the others.
            env={"POLARS_MAX_THREADS": "1"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def dask_in_order(client: Any) -> Callable[[Callable, Iterable[tuple]], Iterator]:
    """Run a function over argument tuples as tasks of ``client``'s cluster, a bounded number
    ahead, and give back the results in the order of the tuples."""
    ahead = AHEAD_PER_THREAD * max(sum(client.nthreads().values()), 1) + 1

    def in_order(function: Callable, arguments: Iterable[tuple]) -> Iterator:
        pending: deque = deque()
        try:
            for args in arguments:
                pending.append(client.submit(function, *args, pure=False))
                if len(pending) >= ahead:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            client.cancel(list(pending))

    return in_order


def _result(future: Any) -> Any:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        raise PipelineError(
            f"the workers died again and again on one task ({exc}); see the workers' logs"
        ) from None
