"""Micro-batching for `unfreeze api`: the images of concurrent requests gathered into one
forward pass, run on one worker thread so the event loop never waits on TensorFlow.

:class:`Batcher` takes up to ``max_batch`` images, waiting at most ``max_wait_s`` after the
first for more, and never stacks images of two shapes. Its queue holds at most ``max_queue``
images (and admitted calls); beyond that :class:`QueueFull` (HTTP 503) instead of growing
memory. A request that timed out before its pass is skipped; a failed pass fails only its
own requests. Nothing here loads or runs a model: ``run(images)`` is given
(:class:`StaleImageSize` is what it raises when the model changed image size meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("unfreeze.api")


class QueueFull(Exception):
    """The batch queue holds ``max_queue`` images already: answer 503, Retry-After."""


class StaleImageSize(Exception):
    """The release was swapped for one with another image size after the images were
    decoded: decode them again at the new size."""


@dataclass
class _Item:
    images: np.ndarray
    future: asyncio.Future


class Batcher:
    """Gathers queued images into forward passes run by ``run`` on one worker thread.

    ``run(images)`` returns ``(probabilities, context)``; each request gets its rows and the
    context (the release that computed them). ``on_batch(n)`` is told each batch's size.
    """

    def __init__(self, run: Callable, max_batch: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.run, self.on_batch = run, on_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.queued = 0  # images waiting, not yet in a batch
        self.calls = 0  # admitted calls (Grad-CAM) waiting for or on the model thread
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="unfreeze-model")
        self._items: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def alive(self) -> bool:
        """Whether the batch loop runs (it only ends when stopped)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """End the loop, fail what still waits, let the model thread finish its pass."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(QueueFull("the server is shutting down"))
        await asyncio.to_thread(self.executor.shutdown, wait=True)

    async def submit(self, images: np.ndarray) -> tuple[np.ndarray, object]:
        """Probabilities of ``images`` and the context that computed them."""
        if self.queued + self.calls + len(images) > self.max_queue:
            raise QueueFull(f"{self.queued} images queued; at most {self.max_queue}")
        future = asyncio.get_running_loop().create_future()
        self._items.append(_Item(images, future))
        self.queued += len(images)
        self._wake.set()
        return await future

    async def call(self, fn: Callable, *args, admit: bool = False):
        """Run ``fn(*args)`` on the model thread, between batches (Grad-CAM). ``admit``:
        count it against ``max_queue`` like one image (:class:`QueueFull` beyond)."""
        if admit and self.queued + self.calls + 1 > self.max_queue:
            raise QueueFull(f"{self.queued} images and {self.calls} explanations queued; "
                            f"at most {self.max_queue}")
        self.calls += admit
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.calls -= admit

    async def _loop(self) -> None:
        while True:
            await self._gather()
            batch = self._take()
            live = [item for item in batch if not item.future.done()]  # gone: timed out
            try:
                if live:
                    await self._answer(live)
            except Exception as exc:  # a bug outside the pass: fail these, keep serving
                log.exception("batch of %d requests failed", len(live))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _gather(self) -> None:
        """Wait for a first item, then up to ``max_wait_s`` until ``max_batch`` images."""
        while not self._items:
            self._wake.clear()
            await self._wake.wait()
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while self.queued < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item]:
        """Items from the front, of one image shape, up to ``max_batch`` images (at least
        one item)."""
        batch = [self._items.popleft()]
        size = len(batch[0].images)
        while (self._items and size + len(self._items[0].images) <= self.max_batch
               and self._items[0].images.shape[1:] == batch[0].images.shape[1:]):
            batch.append(self._items.popleft())
            size += len(batch[-1].images)
        self.queued -= size
        return batch

    async def _answer(self, live: list[_Item]) -> None:
        images = np.concatenate([item.images for item in live])
        try:
            probs, context = await self.call(self.run, images)
        except Exception as exc:  # each request gets it (stale size, or a bug: logged)
            if not isinstance(exc, StaleImageSize):
                log.exception("forward pass of %d images failed", len(images))
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.on_batch(len(images))
        start = 0
        for item in live:
            end = start + len(item.images)
            if not item.future.done():
                item.future.set_result((probs[start:end], context))
            start = end
