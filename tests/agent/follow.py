"""Run a source in the background, apply its updates to a store, wait for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from types import TracebackType

from netfence.cluster.store import ClusterStore
from netfence.sources.changes import Change, Source, Update

_names = itertools.count()


def unique(prefix: str) -> str:
    """A namespace name no other test uses (they share one API server)."""
    return f"{prefix}-{next(_names)}"


class Follower:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.store = ClusterStore()
        self.updates: list[Update] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Follower:
        self._task = asyncio.create_task(self._pump())
        await self.until(lambda store: bool(self.updates), "the first update")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _pump(self) -> None:
        async with contextlib.aclosing(self.source.updates()) as updates:
            async for update in updates:
                self.store.apply(update)
                self.updates.append(update)

    async def until(
        self, condition: Callable[[ClusterStore], bool], what: str, timeout: float = 30.0
    ) -> None:
        assert self._task is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition(self.store):
            if self._task.done():
                self._task.result()
                raise AssertionError(f"the source ended before {what}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {what} after {timeout} s")
            await asyncio.sleep(0.02)

    def mark(self) -> int:
        return len(self.updates)

    def changes_since(self, mark: int, key: str | None = None) -> list[Change]:
        return [
            change
            for update in self.updates[mark:]
            for change in update.changes
            if key is None or change.key == key
        ]
