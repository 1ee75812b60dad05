"""Which numbered pushes (channel messages, session events) are new.

Offsets number a log 1, 2, 3… within one *epoch* of the gateway's backend.
When Redis restarts empty the logs start over at 1 under a new epoch, so
an offset alone no longer tells a new push from one already delivered.
:class:`Offsets` therefore keeps, besides the newest offset, the
``(offset, timestamp)`` of the latest deliveries: a push seen before has
the same pair in any log, a push of a log that started over has not.

It also holds pushes back while the client finds out where they belong
(a replay in progress, an epoch being checked) and gives them back in
offset order.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

# Deliveries remembered per channel or session: as many as one history page.
REMEMBERED = 1000


class Verdict(enum.Enum):
    NEW = "new"
    """After the newest offset: deliver it."""
    SEEN = "seen"
    """Delivered already (same offset and timestamp): drop it."""
    BEHIND = "behind"
    """At or before the newest offset yet never delivered: either a very
    old duplicate or the first pushes of a log that started over."""


class Admit(enum.Enum):
    DELIVER = "deliver"
    """New: deliver it now (recorded as delivered)."""
    SKIP = "skip"
    """A duplicate, or held back for later."""
    OVERFLOW = "overflow"
    """To be held back, but too many are held already."""


class Offsets(Generic[T]):
    def __init__(self, offset: int | None = None) -> None:
        self.offset = offset
        """The newest offset delivered (None: none known yet)."""
        self._recent: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._held: dict[tuple[int, int], tuple[int, T]] = {}
        self.holds = 0
        """Reasons to hold pushes back (a replay or a check in progress)."""

    def judge(self, offset: int, timestamp: int) -> Verdict:
        if (offset, timestamp) in self._recent:
            return Verdict.SEEN
        if self.offset is not None and offset <= self.offset:
            return Verdict.BEHIND
        return Verdict.NEW

    def admit(
        self,
        offset: int,
        timestamp: int,
        item: T,
        *,
        replay: bool,
        check_epoch: Callable[[], bool],
        holding: Callable[[], bool],
        limit: int,
    ) -> Admit:
        """What to do with a push now. ``replay``: read from the log,
        delivered at once. Otherwise an offset already passed yet never
        delivered asks ``check_epoch`` (the log may have started over;
        False: drop it), and while anything holds pushes back (here, or
        ``holding`` for the whole client) it is held."""
        verdict = self.judge(offset, timestamp)
        if verdict is Verdict.SEEN:
            return Admit.SKIP
        if replay:
            if verdict is Verdict.BEHIND:
                return Admit.SKIP
        else:
            if verdict is Verdict.BEHIND and not (self.holds or check_epoch()):
                return Admit.SKIP
            if self.holds or holding():
                return Admit.SKIP if self.hold(offset, timestamp, item, limit) else Admit.OVERFLOW
        self.take(offset, timestamp)
        return Admit.DELIVER

    def take(self, offset: int, timestamp: int) -> None:
        """Record a delivery."""
        self.offset = offset
        key = (offset, timestamp)
        self._recent[key] = None
        self._recent.move_to_end(key)
        while len(self._recent) > REMEMBERED:
            self._recent.popitem(last=False)

    def start_over(self) -> None:
        """The log started over: every offset of the new epoch is ahead.
        What was delivered stays remembered, so that the part of the new
        log already delivered live is not delivered twice."""
        self.offset = 0

    def hold(self, offset: int, timestamp: int, item: T, limit: int) -> bool:
        """Keep ``item`` until :meth:`release`; False when ``limit`` items
        are held already."""
        key = (offset, timestamp)
        if key in self._held:
            return True
        if len(self._held) >= limit:
            return False
        self._held[key] = (offset, item)
        return True

    def release(self) -> list[T]:
        """The held items, oldest offset first."""
        held, self._held = self._held, {}
        return [item for _, item in sorted(held.values(), key=lambda entry: entry[0])]
