"""What a studio page says about a request: n/N, the stage, the time left, the pairs' rows (no server needed)."""

from __future__ import annotations

from heygem_pipeline.api import PairProgress, RequestState, RequestStatus, _pair_progress
from heygem_pipeline.api import PairProgressState as State
from heygem_pipeline.studio.progress import describe, eta_seconds, format_seconds


def _status(*states: State, seconds: float | None = None) -> RequestStatus:
    pairs = [PairProgress(f"v{i}.wav", "anna.png", state, seconds=seconds if state == State.RENDERED else None,
                          error="avatars/x.mp4: no face" if state == State.FAILED else "")
             for i, state in enumerate(states)]
    return RequestStatus("r1", RequestState.RUNNING, "launch", "/b/outputs/launch", pairs)


def test_time_left_comes_from_the_pairs_done_or_recent_requests() -> None:
    running = _status(State.RENDERED, State.FAILED, State.RENDERING, State.WAITING, seconds=30)
    assert running.progress() == "2/4 pairs"
    assert eta_seconds(running) == 60  # two open pairs × 30 s
    fresh = _status(State.RENDERING, State.WAITING)
    assert eta_seconds(fresh) is None and eta_seconds(fresh, typical=12.0) == 24
    assert format_seconds(75) == "1 min 15 s" and format_seconds(9.6) == "10 s"


def test_the_headline_and_rows_in_both_languages() -> None:
    status = _status(State.RENDERED, State.FAILED, State.RENDERING, seconds=20)
    english = describe(status, "en", plain=lambda m: m.replace("avatars/", ""))
    assert english.headline == "2/3 pairs · running · rendering · about 20 s left"
    assert english.rows[1] == ["v1.wav", "anna.png", "failed", None, None, "x.mp4: no face"]
    chinese = describe(status, "zh")
    assert chinese.headline == "2/3 个配对 · 进行中 · 正在渲染 · 预计还需 20 s"
    assert not english.finished and english.videos == []


def test_a_pair_delivered_without_a_measured_sync_offset() -> None:
    """The manifest's table gives "" for an offset the checks could not measure (a short clip): no offset shown."""
    pair = {"script": "text-1.txt", "avatar": "anna.png", "script_id": "s1", "avatar_id": "a1",
            "output": "/b/outputs/try/text-1__anna.mp4"}
    for offset, shown in (("", None), (None, None), (2, 2), ("-1", -1)):
        row = {"script": "text-1.txt", "avatar": "anna.png", "status": "ok", "sync_offset_frames": offset}
        progress = _pair_progress(pair, {}, {("text-1.txt", "anna.png"): row}, finished=True)
        assert progress.state == State.UP_TO_DATE and progress.sync_offset_frames == shown
