"""Where requests stand, read from the instance through the factory's GraphQL API once for every open page.

Each page polls every few seconds; with many pages on one large request, asking the webserver once per page
would load it in proportion to the pages. ``StatusCache`` asks once per request and interval, whoever asks, and
keeps a finished request's status for good (it no longer changes).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from heygem_pipeline.api import ApiError, FactoryClient, PairProgressState, RequestStatus, RequestSummary
from heygem_pipeline.studio.i18n import t

FRESH_SECONDS = 2.0  # an open request's status is asked for at most this often
KEPT_FINISHED = 512  # finished requests' statuses kept in memory
KEPT_PAIR_TIMES = 200  # the latest pairs' render + check times, for the time left of a request just started


class StatusCache:
    """``get(request_id)``: the request's status, asked for at most once per ``fresh_seconds`` slot, whoever asks."""

    def __init__(self, client: FactoryClient, fresh_seconds: float = FRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.fresh_seconds, self.clock = client, fresh_seconds, clock
        self._entries: OrderedDict[str, tuple[int, RequestStatus]] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._history: tuple[int, list[RequestSummary]] | None = None
        self._pair_seconds: OrderedDict[tuple[str, str, str], float] = OrderedDict()  # recent pairs' times

    def _slot(self) -> int:
        # Fixed time slots, not an age: pages polling out of phase still share one query per slot.
        return int(self.clock() // self.fresh_seconds)

    def _lock_for(self, request_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(request_id, threading.Lock())

    def get(self, request_id: str) -> RequestStatus:
        with self._lock_for(request_id):  # callers of one request wait for the one query in flight
            entry = self._entries.get(request_id)
            if entry is not None and (entry[1].finished or entry[0] == self._slot()):
                return entry[1]
            status = self.client.status(request_id)
            with self._guard:
                self._entries[request_id] = (self._slot(), status)
                for pair in status.pairs:
                    if pair.state == PairProgressState.RENDERED and pair.seconds:
                        self._pair_seconds[(request_id, pair.script, pair.avatar)] = pair.seconds
                while len(self._pair_seconds) > KEPT_PAIR_TIMES:
                    self._pair_seconds.popitem(last=False)
                self._entries.move_to_end(request_id)
                while len(self._entries) > KEPT_FINISHED:
                    self._entries.popitem(last=False)
            return status

    def typical_pair_seconds(self) -> float | None:
        """The median time of the pairs rendered lately, in any request this studio followed."""
        with self._guard:
            return statistics.median(self._pair_seconds.values()) if self._pair_seconds else None

    def forget(self, request_id: str) -> None:
        """Ask again next time (after Cancel: the status changes sooner than the interval)."""
        with self._guard:
            self._entries.pop(request_id, None)

    def history(self, limit: int = 50) -> list[RequestSummary]:
        with self._guard:
            if self._history is not None and self._history[0] == self._slot():
                return self._history[1]
        found = self.client.requests(limit)
        with self._guard:
            self._history = (self._slot(), found)
        return found


@dataclass(frozen=True)
class Progress:
    """One request's progress as a page shows it."""

    headline: str  # "3/10 pairs · rendering · about 1 min left"
    rows: list[list[object]]  # the pairs table
    videos: list[tuple[str, str]]  # (video path, caption) of the pairs delivered so far
    finished: bool


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def eta_seconds(status: RequestStatus, typical: float | None = None) -> float | None:
    """Time left: the pairs still open × the median time of a pair of this request so far (renders run one
    at a time on the GPU worker), or ``typical`` (recent requests') before its first; None without either."""
    done = [p.seconds for p in status.pairs if p.state == PairProgressState.RENDERED and p.seconds]
    per_pair = statistics.median(done) if done else typical
    if per_pair is None:
        return None
    return (len(status.pairs) - status.settled) * per_pair


def describe(status: RequestStatus, lang: str, plain: Callable[[str], str] = str,
             typical_pair_seconds: float | None = None) -> Progress:
    """The headline, the pair rows and the finished videos of ``status``, in ``lang``; ``plain`` shortens the
    messages (file locations)."""
    total = len(status.pairs)
    parts = [t("msg_progress", lang, settled=status.settled, total=total)] if total else []
    parts.append(t(status.state.value, lang))
    active = [p.state.value for p in status.pairs if not p.state.settled and p.state != PairProgressState.WAITING]
    if active and not status.finished:
        parts.append(t(active[0], lang))
    if not status.finished and total:
        eta = eta_seconds(status, typical_pair_seconds)
        parts.append(t("msg_eta", lang, eta=format_seconds(eta)) if eta is not None else t("msg_eta_unknown", lang))
    if status.error:
        parts.append(plain(status.error))
    rows = [[p.script, p.avatar, t(p.state.value, lang), round(p.seconds) if p.seconds else None,
             p.sync_offset_frames, plain(p.error)] for p in status.pairs]
    videos = [(p.output or p.video, f"{p.script} × {p.avatar}") for p in status.pairs if p.output or p.video]
    return Progress(" · ".join(parts), rows, videos, status.finished)


def describe_error(error: ApiError, lang: str) -> Progress:
    return Progress(t("msg_unreachable", lang, error=error), [], [], False)
