"""The engine: one daemon thread running one asyncio event loop.

Every transfer, every state change and every database write happens on this loop.
Other threads talk to it only through :meth:`Engine.run` (wait for a coroutine's
result), :meth:`Engine.submit` (get a concurrent future) and :meth:`Engine.call_soon`.
That is what keeps downloads going while a notebook cell is busy or interrupted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Engine"]

T = TypeVar("T")
log = logging.getLogger("ipybgfetch")


class Engine:
    """Owns the background thread and its event loop. Started lazily, stopped on close."""

    def __init__(self, name: str = "ipybgfetch-engine") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # strong references to every task
        self.on_error: Callable[[BaseException, str], Any] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._ensure_started()

    def in_engine_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._thread is not None and self._thread.is_alive():
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            thread = threading.Thread(target=main, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the engine loop; return a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_started())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the engine loop and wait for its result (not from the engine)."""
        if self.in_engine_thread():
            coro.close()
            raise RuntimeError("Engine.run() called from the engine thread; await instead")
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._ensure_started().call_soon_threadsafe(fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Create a task on the engine loop (engine thread only), keeping a strong reference."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("ipybgfetch: engine task %s failed", task.get_name(), exc_info=exc)
            if self.on_error is not None:
                self.on_error(exc, task.get_name())

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every task and stop the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            tasks = [t for t in self._tasks if not t.done()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
