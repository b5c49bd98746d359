"""An asyncio event loop on a virtual clock: hours of a trace run in seconds.

`loop.time()` is a number this loop owns. When no callback is ready, the selector does not
sleep: it moves the clock to the next timer and returns. So `asyncio.sleep`, `asyncio.timeout`
and `asyncio.wait(timeout=...)` behave as in the daemon, in the same order, only without
waiting. Real file descriptors (the loop's self-pipe) are still polled, without blocking.

Why our own and not `looptime`: the bench and the fast simulator tests need nothing but
`time()` and a selector that jumps; this is ~60 lines with no dependency, and it fails loudly
(instead of hanging) when every task waits for something that no timer will bring.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
# Real seconds the loop waits for a thread's wake-up before it calls an idle loop a deadlock.
# Work in threads takes no virtual time; a timer due meanwhile fires first.
IDLE_GRACE = 5.0


class Idle(RuntimeError):
    """Every task waits, no timer is armed and no file descriptor is registered: a deadlock."""


class _JumpingSelector(selectors.DefaultSelector):
    """Polls real descriptors without blocking; a wait becomes a jump of the virtual clock."""

    def __init__(self, loop: VirtualTimeLoop, idle_grace: float) -> None:
        super().__init__()
        self._loop = loop
        self._idle_grace = idle_grace

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            # Callbacks are ready: descriptors are polled when the loop would otherwise jump,
            # which saves a system call on most turns of a busy loop.
            return []
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            # Only a thread (an executor job) can still wake the loop: give it real time.
            ready = super().select(self._idle_grace)
            if ready:
                return ready
            raise Idle("every task waits and no timer is armed: nothing can happen any more")
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock only moves when nothing else can run."""

    def __init__(self, start: float = 0.0, *, idle_grace: float = IDLE_GRACE) -> None:
        self._now = start
        super().__init__(_JumpingSelector(self, idle_grace))
        self._clock_resolution = 1e-9

    def time(self) -> float:
        """The virtual clock (seconds)."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; the selector does it when every task waits."""
        if seconds < 0:
            raise ValueError(f"the virtual clock only moves forward, not by {seconds}")
        self._now += seconds


def run(main: Coroutine[Any, Any, _T], *, start: float = 0.0, idle_grace: float = IDLE_GRACE) -> _T:
    """`asyncio.run` on a fresh virtual-time loop (closed afterwards)."""
    with asyncio.Runner(
        loop_factory=lambda: VirtualTimeLoop(start, idle_grace=idle_grace)
    ) as runner:
        return runner.run(main)
