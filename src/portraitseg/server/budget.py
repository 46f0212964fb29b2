"""A shared, counted budget: request slots, bytes of request bodies held in memory, pixels
being decoded and processed. One mechanism for every "how much at once" limit of the server.

The event loop only ever calls the non-blocking :meth:`Budget.try_acquire` (a refusal is a
503 at once); worker threads may wait for room with :meth:`Budget.acquire`, bounded by their
request's deadline.
"""

from __future__ import annotations

import threading


class Budget:
    """``limit`` units shared by concurrent users; thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a budget needs a limit >= 1; got {limit}")
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` units now, or return False (never waits)."""
        with self._cond:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def acquire(self, n: int, timeout: float) -> bool:
        """Take ``n`` units, waiting up to ``timeout`` seconds for room; False on timeout.
        ``n`` over the whole limit is taken as the whole limit (so it runs alone, not never):
        callers must :meth:`release` the value returned by :meth:`clamp`."""
        n = self.clamp(n)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + n <= self.limit, timeout=max(timeout, 0.0)):
                return False
            self.used += n
            return True

    def clamp(self, n: int) -> int:
        return min(n, self.limit)

    def release(self, n: int = 1) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()
