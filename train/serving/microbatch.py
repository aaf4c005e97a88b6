"""A micro-batcher for the server: concurrent requests share one pipeline call, made from one worker thread.

A forward pass over 300 pairs costs far less than three over 100 (one tokenizer call, fuller matrix products),
so requests that arrive within a few milliseconds of each other are run together. The pipeline is not
thread-safe, so every call goes through the batcher's single worker thread, batched or not.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from dataclasses import dataclass
from typing import Any, Callable


class Overloaded(Exception):
    """max_pending requests are already queued or running."""


@dataclass
class Job:
    payload: Any
    size: int  # pairs it adds to a batch
    future: asyncio.Future


def run_isolated(run: Callable[[list], list], payloads: list) -> list:
    """run(payloads), or, when it raises, each payload alone: one bad request fails only itself."""
    try:
        return run(payloads)
    except Exception as e:  # noqa: BLE001 - handed back to the request that caused it
        if len(payloads) == 1:
            return [e]
    out = []
    for payload in payloads:
        try:
            out.extend(run([payload]))
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out


class MicroBatcher:
    """`await submit(payload, size, timeout)` -> that payload's item of `run(payloads)`.

    A batch opens with the oldest waiting job and closes after `wait_s`, or once the next job would take it past
    `max_size` pairs (a single larger job runs alone). While the worker is busy, new jobs queue up and form the
    next batch, so under load batches fill without waiting. `enabled=False` runs one job per call.
    `run` returns one result per payload, or an exception instance for a payload that failed.
    """

    def __init__(self, run: Callable[[list], list], max_size: int, wait_s: float, max_pending: int,
                 enabled: bool = True):
        self.run, self.max_size, self.wait_s, self.max_pending, self.enabled = run, max_size, wait_s, max_pending, enabled
        self.jobs: collections.deque[Job] = collections.deque()
        self.pending = 0
        self.batches = 0  # pipeline calls made, for /info and the tests
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="crosstune-pipeline")

    async def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.collect())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for job in self.jobs:
            job.future.cancel()
        self.worker.shutdown(wait=True)

    async def submit(self, payload: Any, size: int, timeout: float) -> Any:
        """Raises Overloaded when the queue is full and asyncio.TimeoutError past `timeout` seconds; a job that
        timed out before the worker reached it is dropped unrun."""
        if self.pending >= self.max_pending:
            raise Overloaded
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            self.jobs.append(Job(payload, size, future))
            self.wakeup.set()
            # wait_for cancels the future on timeout; the collector skips cancelled jobs
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending -= 1

    async def next_batch(self) -> list[Job]:
        while not self.jobs:
            self.wakeup.clear()
            await self.wakeup.wait()
        loop = asyncio.get_running_loop()
        batch = [self.jobs.popleft()]
        size, deadline = batch[0].size, loop.time() + self.wait_s
        while self.enabled and size < self.max_size:
            if self.jobs:
                if size + self.jobs[0].size > self.max_size:
                    break
                batch.append(self.jobs.popleft())
                size += batch[-1].size
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), left)
            except asyncio.TimeoutError:
                break
        return batch

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            live = [job for job in await self.next_batch() if not job.future.done()]
            if not live:
                continue
            self.batches += 1
            results = await loop.run_in_executor(self.worker, run_isolated, self.run, [j.payload for j in live])
            for job, result in zip(live, results):
                if job.future.done():  # its request timed out while the worker ran
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
