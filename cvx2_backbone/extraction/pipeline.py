"""Overlapping the stages of a batch job: inputs prepared ahead on a thread pool, outputs written on one thread.

``cvx2 extract`` decodes and preprocesses the next images while the engine runs and the previous features are
written, so the engine waits for neither JPEG decoding nor the disk. Both stages are bounded (a few batches), and
an error or interrupt in either one reaches the caller's thread.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
_DONE = object()


def prefetched(func: Callable[[Item], Result], items: Iterable[Item], workers: int, ahead: int) -> Iterator[Result]:
    """``func(item)`` for every item, in order, computed up to ``ahead`` items in advance on ``workers`` threads.

    Leaving the loop early (break, error, interrupt) cancels what has not started and waits for what has.
    """
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="cvx2-prefetch")
    iterator = iter(items)
    pending = deque(pool.submit(func, item) for item in islice(iterator, max(1, ahead)))
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(func, item) for item in islice(iterator, 1))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class BackgroundWriter:
    """Calls ``write(item)`` for every queued item on its own thread, in order, at most ``depth`` items behind.

    The first exception the writer raises (an interrupt included) is raised again by the next :meth:`put` and by
    :meth:`finish`; the items queued after it are dropped, never half-written.
    """

    def __init__(self, write: Callable[[Any], None], depth: int = 2) -> None:
        self.write = write
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name="cvx2-writer")
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self.error is None:
                try:
                    self.write(item)
                except BaseException as err:  # handed to the caller's thread, KeyboardInterrupt included
                    self.error = err

    def put(self, item: Any) -> None:
        """Queue ``item`` (waits while ``depth`` items are queued); raises the writer's error if it failed."""
        self._raise_error()
        self._queue.put(item)

    def finish(self) -> None:
        """Wait until every queued item is written; raise the writer's error if it failed."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error
