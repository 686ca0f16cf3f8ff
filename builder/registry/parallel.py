"""Run one function over many items on a thread pool, stopping early on the first failure."""
from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


def run_parallel(fn: Callable[[T], object], items: Iterable[T], concurrency: int) -> None:
    """Call ``fn`` on every item with up to ``concurrency`` threads; re-raise the first error.

    Work not yet started is cancelled as soon as one call fails (or on Ctrl-C), so a
    refused login or a dead registry fails fast instead of after every blob was tried.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="registry")
    try:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                raise future.exception()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
