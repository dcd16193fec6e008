"""One inference thread that answers /recommend requests in micro-batches.

Why one thread: on a small machine the model's work (NumPy, faiss, a torch MLP) is best done by
one thread at a time with one intra-op thread, leaving the other core(s) to the HTTP event loop;
many request threads would only fight over the GIL and the cores. Why batches: the requests that
queued while the previous batch ran are answered by one ``recommend_batch`` call, which shares the
per-call overhead of every stage. Nothing ever waits for a batch to fill: a lone request is
answered at once, so batching only kicks in under load, where it raises throughput.

Each request's history is read from the event store here, just before its batch runs, so a watch
whose POST returned before the request was made is always in it. Requests are grouped by the
model they arrived under: across a hot reload, a request is answered by the model it started on.

Answers go back as the event loop's own futures, all of a batch's in one
``call_soon_threadsafe``: one wake-up of the loop per batch, where a ``concurrent.futures.Future``
per request, wrapped for asyncio, cost a lock, a condition and a wake-up each (about a tenth of
the GIL's time at saturation).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ytdnn.serve.engine import Job
from ytdnn.serve.events import EventStore, History

BatchHook = Callable[[int, float, dict[str, float]], None]  # (batch size, seconds, stage seconds)


class RecommendBatcher:
    """``await submit(job)``: the job's answer (a dict); the thread starts on first use."""

    def __init__(self, store: EventStore, history_limit: int, max_batch_size: int,
                 on_batch: BatchHook | None = None):
        self.store, self.history_limit, self.max_batch_size = store, history_limit, max_batch_size
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Job) -> asyncio.Future:
        """The job's answer, as a future of the running event loop (call it from the loop)."""
        future = asyncio.get_running_loop().create_future()
        self._ensure_started()
        self._queue.put((job, future))
        return future

    def pending(self) -> int:
        return self._queue.qsize()

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ytdnn-inference", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Answer what is queued, then end the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        # torch's thread count is left alone: torch.set_num_threads here would not stay in this
        # thread (measured: every thread started afterwards gets the new count), so it is the
        # entry point's to set (`ytdnn serve --threads`, ServeConfig.num_threads)
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._answer(batch)
            if stop:
                return

    def _answer(self, batch: list[tuple[Job, asyncio.Future]]) -> None:
        start = time.perf_counter()
        live = [(job, future) for job, future in batch if not future.done()]  # done: cancelled
        timings: dict[str, float] = {}
        outcomes: list[tuple[asyncio.Future, bool, Any]] = []  # (future, failed, answer or error)
        try:
            for job, _ in live:
                job.history = History(
                    job.user_id,
                    self.store.watches(job.user_id, self.history_limit),
                    self.store.searches(job.user_id, self.history_limit),
                )
            timings["history"] = time.perf_counter() - start
        except BaseException as err:  # noqa: BLE001 - every waiting request must hear back
            _settle([(future, True, err) for _, future in live])
            return
        by_model: dict[int, list[tuple[Job, asyncio.Future]]] = {}
        for job, future in live:
            by_model.setdefault(id(job.model), []).append((job, future))
        for group in by_model.values():
            self._answer_group(group, timings, outcomes)
        _settle(outcomes)
        if self.on_batch is not None:
            self.on_batch(len(live), time.perf_counter() - start, timings)

    def _answer_group(self, group: list[tuple[Job, asyncio.Future]], timings: dict[str, float],
                      outcomes: list[tuple[asyncio.Future, bool, Any]]) -> None:
        model = group[0][0].model
        try:
            answers, stage_seconds = model.answer([job for job, _ in group])
        except Exception as err:  # noqa: BLE001 - becomes that request's 500
            if len(group) == 1:
                outcomes.append((group[0][1], True, err))
                return
            for one in group:  # one bad request must not fail the others: answer them apart
                self._answer_group([one], timings, outcomes)
            return
        for stage, seconds in stage_seconds.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        outcomes += [(future, False, answer) for (_, future), answer in zip(group, answers)]


def _settle(outcomes: list[tuple[asyncio.Future, bool, Any]]) -> None:
    """Hand the outcomes to their futures, one call into each future's event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, some in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, some)
        except RuntimeError:  # the loop has closed: nobody waits for these answers any more
            pass


def _set_all(outcomes: list[tuple[asyncio.Future, bool, Any]]) -> None:
    """In the futures' loop: each future gets its answer or error, unless it was cancelled."""
    for future, failed, value in outcomes:
        if not future.done():
            if failed:
                future.set_exception(value)
            else:
                future.set_result(value)

