"""Fair turns on the device for a classroom.

Gradio's queue is first in, first out: one client that submits sixty model jobs makes
everyone wait behind all of them, and fills the queue so that even light events are
refused. Model jobs therefore bypass Gradio's queue limit and wait here instead, as
coroutines (holding no thread), for :meth:`FairScheduler.turn`:

* **round robin over client addresses**: the next turn goes to the address that waited
  longest, so a greedy address delays everyone else by at most one job;
* **one waiting job per browser session**: a new click supersedes the session's waiting
  job (:class:`Superseded`), which then ends without running;
* **bounded waiting**: at most ``per_address`` waiting jobs per address and ``total`` in
  all; beyond that a job is refused at once with a message (:class:`Refused`);
* **clients that went away**: :meth:`cancel_session` drops a closed browser tab's jobs, a
  job whose ``still_wanted()`` says nobody is waiting for its result any more (an API client
  that never reads it) is dropped when its turn comes, and a job that waited longer than
  ``max_wait_s`` is dropped (by ``clock``, which tests replace with a fake one).

Up to ``lanes`` jobs hold a turn at once (one by default, so it has every core to itself): with
the predictor's lanes (:class:`segmodels.runtime.PassLanes`), the next job's passes queue behind
the running one's and fill the lane it leaves idle, and its results are drawn while the running
job's are being sent."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass


class Refused(RuntimeError):
    """The job was not admitted; the message is meant for the user."""


class Superseded(RuntimeError):
    """A newer job of the same browser session replaced this one before it ran."""


@dataclass(eq=False)
class Ticket:
    address: str
    session: str | None
    created: float
    still_wanted: Callable[[], bool] | None = None
    granted: asyncio.Future | None = None


class FairScheduler:
    """Grants the device to ``lanes`` jobs at a time, round robin over client addresses."""

    def __init__(self, per_address: int = 40, total: int = 200, max_wait_s: float = 600.0, clock: Callable[[], float] = time.monotonic, lanes: int = 1):
        if per_address < 1 or total < per_address:
            raise ValueError(f"need 1 <= per_address <= total, got {per_address}, {total}")
        if lanes < 1:
            raise ValueError(f"need lanes >= 1, got {lanes}")
        self.lanes = lanes
        self.per_address = per_address
        self.total = total
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._waiting: OrderedDict[str, deque[Ticket]] = OrderedDict()  # address -> tickets; order = whose turn is next
        self.running = 0
        self.served = 0

    def waiting(self, address: str | None = None) -> int:
        if address is not None:
            return len(self._waiting.get(address, ()))
        return sum(len(q) for q in self._waiting.values())

    @property
    def busy(self) -> bool:
        """Whether a job holds a turn."""
        return self.running > 0

    def ahead(self) -> int:
        """Jobs a job submitted now would wait for: the waiting ones, and the running ones
        when every turn is taken."""
        return self.waiting() + (self.running if self.running >= self.lanes else 0)

    def _admit(self, ticket: Ticket) -> None:
        if ticket.session is not None:
            for older in [t for q in self._waiting.values() for t in q if t.session == ticket.session]:
                self._drop(older, Superseded("replaced by a newer click of the same browser tab"))
        queue = self._waiting.get(ticket.address, ())
        if len(queue) >= self.per_address:
            raise Refused(f"{len(queue)} runs from your network address are already waiting (at most {self.per_address}). Wait for them to finish, then try again.")
        if self.waiting() >= self.total:
            raise Refused(f"The server is busy: {self.waiting()} runs are waiting (at most {self.total}). Try again in a minute.")
        self._waiting.setdefault(ticket.address, deque()).append(ticket)

    def _drop(self, ticket: Ticket, reason: Exception) -> None:
        queue = self._waiting.get(ticket.address)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[ticket.address]
        if ticket.granted is not None and not ticket.granted.done():
            ticket.granted.set_exception(reason)

    def _grant_next(self) -> None:
        """Give each free turn to the oldest ticket of the address whose turn it is."""
        now = self._clock()
        for queue in list(self._waiting.values()):
            for stale in [t for t in queue if now - t.created > self.max_wait_s]:
                self._drop(stale, Refused(f"Your run waited more than {self.max_wait_s:.0f} s and was dropped. Try again."))
        while self._waiting and self.running < self.lanes:
            address, queue = next(iter(self._waiting.items()))
            ticket = queue.popleft()
            del self._waiting[address]
            if queue:
                self._waiting[address] = queue  # to the back of the round
            if ticket.still_wanted is not None and not ticket.still_wanted():
                if ticket.granted is not None and not ticket.granted.done():
                    ticket.granted.set_exception(Superseded("nobody is reading its result"))
                continue
            if ticket.granted is not None and not ticket.granted.done():
                self.running += 1
                ticket.granted.set_result(True)

    def cancel_session(self, session: str | None) -> int:
        """Drop the waiting jobs of a browser session that ended; returns how many."""
        dropped = [t for q in self._waiting.values() for t in q if session is not None and t.session == session]
        for ticket in dropped:
            self._drop(ticket, Superseded("the browser tab was closed"))
        return len(dropped)

    @asynccontextmanager
    async def turn(self, address: str | None, session: str | None, still_wanted: Callable[[], bool] | None = None) -> AsyncIterator[None]:
        """Wait for this job's turn (raises :class:`Refused` or :class:`Superseded`), then
        hold the device until the block ends."""
        ticket = Ticket(address or "unknown", session, self._clock(), still_wanted)
        ticket.granted = asyncio.get_running_loop().create_future()
        self._admit(ticket)
        self._grant_next()
        try:
            await ticket.granted
        except asyncio.CancelledError:
            self._drop(ticket, Superseded("cancelled"))
            if ticket.granted.done() and not ticket.granted.cancelled() and ticket.granted.exception() is None:
                self._release()
            raise
        try:
            yield
        finally:
            self.served += 1
            self._release()

    def _release(self) -> None:
        self.running -= 1
        self._grant_next()
