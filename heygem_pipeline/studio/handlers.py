"""What the studio's buttons do, without Gradio: put files into the bucket, write the request's campaign, submit
it through the factory's API, read progress back. Every call returns in seconds; Dagster does the work.

The page (``app.py``) and the tests call these the same way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from heygem_pipeline.api import ApiError, FactoryClient, PairProgressState, RequestStatus
from heygem_pipeline.engine.audio.voices.catalog import VoiceEntry, find_voice, voice_catalog
from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, KokoroChoice, PiperChoice
from heygem_pipeline.errors import HeygemError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.naming import stem_and_ext
from heygem_pipeline.studio.i18n import t
from heygem_pipeline.studio.progress import StatusCache
from heygem_pipeline.studio.uploads import (
    StudioOptions,
    store_text,
    store_transcript,
    store_upload,
    write_campaign,
)

CANCEL_SETTLE_SECONDS = 15.0  # after Cancel, runs the request sensor created meanwhile are stopped too
SINGLE_PREFIX = "try-"  # the campaigns of the "Try one" tab
VoiceChoice = EspeakChoice | PiperChoice | KokoroChoice


class StudioError(HeygemError):
    """Something the user can fix on the page; the message says what (already in the page's language)."""


@dataclass
class Submission:
    request_id: str
    campaign: str
    notes: list[str] = field(default_factory=list)  # uploads not used, each with its one-line reason


@dataclass
class Upload:
    """A browser upload: where Gradio stored it, and the name the user's file had."""

    path: str
    name: str

    @classmethod
    def of(cls, path: str | Path) -> Upload:
        # Gradio keeps the original file name as the last component of its cached path.
        return cls(str(path), PurePosixPath(str(path)).name)


class Studio:
    """The studio's state on the server: one bucket, one client of the factory, one status cache."""

    def __init__(self, bucket: Bucket, client: FactoryClient, engines: Sequence[str] = ("viseme",),
                 voices_folder: str | Path | None = None) -> None:
        self.bucket, self.client, self.engines = bucket, client, tuple(engines)
        self.voices_folder = Path(voices_folder).expanduser() if voices_folder else None
        self.cache = StatusCache(client)

    # -- voices

    def voices(self) -> list[VoiceEntry]:
        """The voices to pick for text scripts: the built-in one, then the voices folder's (read again each time:
        a voice dropped into the folder shows up on the next page load)."""
        return voice_catalog(self.voices_folder)

    def voice_choice(self, key: str | None, lang: str = "en") -> VoiceChoice | None:
        """The voice a page's pick names (None: the built-in voice); a key not in the voices folder (any more) is
        a ``StudioError``: the page cannot name a file of its own."""
        try:
            return find_voice(self.voices(), key).choice
        except KeyError:
            raise StudioError(t("msg_unknown_voice", lang)) from None

    # -- submitting

    def _store(self, kind: str, uploads: Sequence[Upload], replace: bool, notes: list[str]) -> list[str]:
        names = []
        for upload in uploads:
            try:
                names.append(store_upload(self.bucket, kind, upload.path, upload.name, replace=replace).name)
            except HeygemError as error:  # a bad file is named on the page; the others go on
                notes.append(str(error))
        return names

    def _submit(self, campaign_name: str, scripts: list[str], avatars: list[str], options: StudioOptions,
                notes: list[str], lang: str) -> Submission:
        if options.engine not in self.engines:
            raise StudioError(f"engine {options.engine!r} is not available here ({', '.join(self.engines)})")
        campaign = write_campaign(self.bucket, campaign_name, scripts, avatars, options)
        try:
            request_id = self.client.submit(campaign=campaign, bucket=self.bucket.url)
        except ApiError as error:
            raise StudioError(t("msg_unreachable", lang, error=error)) from error
        return Submission(request_id, campaign, notes)

    def submit_single(self, voice: Upload | None, text: str, presenter: Upload | None, options: StudioOptions,
                      lang: str = "en") -> Submission:
        """One voice × one presenter, as campaign ``try-<time>``. The voice is a file (``text``, if any, is what it
        says: its subtitles), or else ``text`` voiced offline."""
        notes: list[str] = []
        if voice is not None:
            scripts = self._store("script", [voice], False, notes)
            for script in scripts:
                store_transcript(self.bucket, script, text)
        elif text.strip():
            scripts = [store_text(self.bucket, text).name]
        else:
            raise StudioError(t("msg_need_voice", lang))
        if presenter is None:
            raise StudioError(t("msg_need_presenter", lang))
        avatars = self._store("avatar", [presenter], False, notes)
        if not scripts or not avatars:
            raise StudioError("; ".join(notes))
        name = f"{SINGLE_PREFIX}{datetime.now():%Y%m%d-%H%M%S}"
        return self._submit(name, scripts, avatars, options, notes, lang)

    def submit_batch(self, voices: Sequence[Upload], presenters: Sequence[Upload], existing_voices: Sequence[str],
                     existing_presenters: Sequence[str], name: str, options: StudioOptions, replace: bool = False,
                     lang: str = "en") -> Submission:
        """Every voice × every presenter (uploads and files already in the bucket) as campaign ``name``. A ``.txt``
        beside a voice of the same name is what that voice says (its subtitles); any other ``.txt`` is a text to
        voice."""
        notes: list[str] = []
        texts = {stem_and_ext(v.name)[0]: v for v in voices if stem_and_ext(v.name)[1] == "txt"}
        sounds = [v for v in voices if stem_and_ext(v.name)[1] != "txt"]
        scripts = self._store("script", sounds, replace, notes) + list(existing_voices)
        for voice in sounds:
            transcript = texts.pop(stem_and_ext(voice.name)[0], None)
            stored = next((s for s in scripts if stem_and_ext(s)[0] == stem_and_ext(voice.name)[0]), None)
            if transcript is not None and stored is not None:
                store_transcript(self.bucket, stored, Path(transcript.path).read_text(errors="replace"))
        for text in texts.values():  # texts of their own: voiced offline
            scripts.append(store_text(self.bucket, Path(text.path).read_text(errors="replace")).name)
        avatars = self._store("avatar", presenters, replace, notes) + list(existing_presenters)
        if not scripts:
            raise StudioError("; ".join([t("msg_need_voices", lang), *notes]))
        if not avatars:
            raise StudioError("; ".join([t("msg_need_presenters", lang), *notes]))
        name = name.strip() or f"batch-{datetime.now():%Y%m%d-%H%M%S}"
        return self._submit(name, sorted(set(scripts)), sorted(set(avatars)), options, notes, lang)

    # -- following

    def status(self, request_id: str) -> RequestStatus:
        return self.cache.get(request_id)

    def plain(self, message: str) -> str:
        """A message without the bucket's own location: ``avatars/x.mp4`` says which file to the user."""
        return message.replace(f"{self.bucket.uri('')}/", "").replace(f"{self.bucket.root}/", "")

    def cancel(self, request_id: str) -> int:
        """Stop the request's runs now, and keep stopping any the sensor starts in the next few seconds."""
        stopped = self.client.cancel(request_id)
        self.cache.forget(request_id)
        threading.Thread(target=self._cancel_late_runs, args=(request_id,), daemon=True).start()
        return stopped

    def _cancel_late_runs(self, request_id: str) -> None:
        with contextlib.suppress(ApiError):  # the webserver went away: nothing is running any more either
            self.client.cancel(request_id, settle_seconds=CANCEL_SETTLE_SECONDS)
        self.cache.forget(request_id)

    def retry_failed(self, request_id: str, lang: str = "en") -> str:
        """A new request for the failed (or canceled) pairs of ``request_id``: one pair, or its campaign (its pairs
        already delivered are up to date and are not made again)."""
        status = self.client.status(request_id)
        failed = [p for p in status.pairs if p.state in (PairProgressState.FAILED, PairProgressState.CANCELED)]
        if not failed:
            raise StudioError(t("msg_nothing_failed", lang))
        try:
            if len(failed) == 1:
                return self.client.submit(campaign=status.campaign, script=failed[0].script,
                                          avatar=failed[0].avatar, bucket=self.bucket.url)
            return self.client.submit(campaign=status.campaign, bucket=self.bucket.url)
        except ApiError as error:
            raise StudioError(t("msg_unreachable", lang, error=error)) from error

    def history(self, lang: str = "en", limit: int = 50) -> list[list[object]]:
        """Past requests, newest first: campaign, when, pairs settled, state, request id."""
        rows = []
        for summary in self.cache.history(limit):
            try:
                status = self.cache.get(summary.request_id)
            except ApiError:
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.created))
            rows.append([status.campaign or summary.campaign, when, f"{status.settled}/{len(status.pairs)}",
                         t(status.state.value, lang), summary.request_id])
        return rows
