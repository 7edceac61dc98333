"""An asyncio event loop on a background thread, driven from synchronous code.

The plant simulator, the gateway and test servers are asyncio services; tests, the demo and
other tools drive them from their own thread. `call(fn, *args)` runs `fn` in the loop (a
coroutine function or a plain one; a coroutine object works too) and returns its result.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


class LoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self.loop is not None and self.loop.is_running()

    def start_loop(self, timeout: float = 10.0) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{self.name}: event loop did not start")

    def call(self, fn: Any, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        if not self.running:
            raise RuntimeError(f"{self.name}: event loop is not running")
        assert self.loop is not None
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{self.name}: call() from the loop's own thread would deadlock")

        async def run() -> Any:
            result = fn if inspect.isawaitable(fn) else fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop_loop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.name}: thread did not stop")
        self._thread = None
        self.loop = None
