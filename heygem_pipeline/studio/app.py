"""The studio's page (Gradio Blocks): tabs "Try one", "Batch" and "History" over ``handlers.Studio``.

Element ids (``elem_id``) are stable for automation; the README lists them. A request's id is kept in the URL
(``?request=…``): a reload, a closed tab or another browser shows the same request, read from the instance.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from heygem_pipeline.api import ApiError
from heygem_pipeline.engine.audio.voices.catalog import BUILTIN_KEY
from heygem_pipeline.studio.handlers import SINGLE_PREFIX, Studio, StudioError, Upload
from heygem_pipeline.studio.i18n import LANGUAGES, browser_language, t
from heygem_pipeline.studio.progress import describe, describe_error
from heygem_pipeline.studio.uploads import (
    PRESENTER_EXTENSIONS,
    QUALITY_CRF,
    VOICE_EXTENSIONS,
    StudioOptions,
    bucket_files,
)

POLL_SECONDS = 2.0
SET_URL = """(request) => { const url = new URL(window.location);
  if (request) { url.searchParams.set('request', request); } window.history.replaceState(null, '', url); }"""


def _types(extensions: frozenset[str]) -> list[str]:
    return sorted(f".{e}" for e in extensions)


def build(studio: Studio) -> gr.Blocks:
    """The page, bound to ``studio``."""
    labelled: list[tuple[gr.components.Component, str]] = []  # relabelled when the language changes

    def label(component, key: str):
        labelled.append((component, key))
        return component

    with gr.Blocks(title="HeyGem Studio", analytics_enabled=False) as page:
        title = gr.Markdown(f"## {t('title', 'en')}\n{t('intro', 'en')}", elem_id="title")
        lang = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value="en", label=t("language", "en"),
                        elem_id="language")
        label(lang, "language")
        # The requests shown, in the page (not server state): the URL and the browser's scripts can read them.
        single_request = gr.Textbox(visible=False, elem_id="single-request")
        batch_request = gr.Textbox(visible=False, elem_id="batch-request")
        shown = gr.State(("", ""))
        with gr.Tabs(selected="single") as tabs:
            with gr.Tab(t("tab_single", "en"), id="single", elem_id="tab-single") as tab_single, gr.Row():
                with gr.Column():
                    voice = label(gr.File(label=t("voice_file", "en"), file_types=_types(VOICE_EXTENSIONS),
                                          elem_id="single-voice"), "voice_file")
                    text = label(gr.Textbox(label=t("voice_text", "en"), lines=3, elem_id="single-text"),
                                 "voice_text")
                    single_voice = _voice_dropdown(studio, "single", label)
                    presenter = label(gr.File(label=t("presenter_file", "en"),
                                              file_types=_types(PRESENTER_EXTENSIONS),
                                              elem_id="single-presenter"), "presenter_file")
                    single_options = _options(studio, "single", label, with_voice=False)
                    single_generate = gr.Button(t("generate", "en"), variant="primary",
                                                elem_id="single-generate")
                with gr.Column():
                    single_progress = gr.Markdown(t("msg_no_request", "en"), elem_id="single-progress")
                    single_video = label(gr.Video(label=t("video", "en"), interactive=False,
                                                  elem_id="single-video"), "video")
                    single_files = label(gr.File(label=t("downloads", "en"), file_count="multiple",
                                                 interactive=False, elem_id="single-downloads"), "downloads")
            with gr.Tab(t("tab_batch", "en"), id="batch", elem_id="tab-batch") as tab_batch:
                with gr.Row():
                    with gr.Column():
                        voices = label(gr.File(label=t("batch_voices", "en"), file_count="multiple",
                                               file_types=_types(VOICE_EXTENSIONS | {"txt"}), elem_id="batch-voices"),
                                       "batch_voices")
                        existing_voices = label(gr.Dropdown(bucket_files(studio.bucket, "script"), multiselect=True,
                                                            label=t("batch_existing_voices", "en"),
                                                            elem_id="batch-existing-voices"),
                                                "batch_existing_voices")
                    with gr.Column():
                        presenters = label(gr.File(label=t("batch_presenters", "en"), file_count="multiple",
                                                   file_types=_types(PRESENTER_EXTENSIONS),
                                                   elem_id="batch-presenters"), "batch_presenters")
                        existing_presenters = label(gr.Dropdown(bucket_files(studio.bucket, "avatar"),
                                                                multiselect=True,
                                                                label=t("batch_existing_presenters", "en"),
                                                                elem_id="batch-existing-presenters"),
                                                    "batch_existing_presenters")
                with gr.Row():
                    name = label(gr.Textbox(label=t("batch_name", "en"), elem_id="batch-name"), "batch_name")
                    replace = label(gr.Checkbox(label=t("replace", "en"), elem_id="batch-replace"), "replace")
                batch_options = _options(studio, "batch", label, with_voice=True)  # the voice first
                batch_generate = gr.Button(t("generate", "en"), variant="primary", elem_id="batch-generate")
                batch_progress = gr.Markdown(t("msg_no_request", "en"), elem_id="batch-progress")
                headers = ["col_voice", "col_presenter", "col_state", "col_seconds", "col_sync", "col_reason"]
                pairs = gr.Dataframe(headers=[t(h, "en") for h in headers], interactive=False, wrap=True,
                                     column_widths=["15%", "15%", "12%", "8%", "10%", "40%"], elem_id="batch-pairs")
                gallery = label(gr.Gallery(label=t("batch_gallery", "en"), columns=4, height="auto",
                                           object_fit="contain", preview=False, elem_id="batch-gallery"),
                                "batch_gallery")
                with gr.Row():
                    zip_button = gr.DownloadButton(t("zip", "en"), visible=False, elem_id="batch-zip")
                    manifest_button = gr.DownloadButton(t("manifest", "en"), visible=False, elem_id="batch-manifest")
                    retry = gr.Button(t("retry", "en"), elem_id="batch-retry")
                    cancel = gr.Button(t("cancel", "en"), variant="stop", elem_id="batch-cancel")
            with gr.Tab(t("tab_history", "en"), id="history", elem_id="tab-history") as tab_history:
                history_hint = gr.Markdown(t("open_hint", "en"))
                history_headers = ["col_campaign", "col_when", "col_pairs", "col_state", "col_request"]
                history = gr.Dataframe(headers=[t(h, "en") for h in history_headers], interactive=False,
                                       elem_id="history-table")
                refresh = gr.Button(t("refresh", "en"), elem_id="history-refresh")
        timer = gr.Timer(POLL_SECONDS, active=False)  # on while a request shown here is open

        # -- events

        def generate_single(voice_path, text_value, voice_key, presenter_path, engine, subtitles, quality,
                            lang_value):
            try:
                options = StudioOptions(engine, subtitles, quality, studio.voice_choice(voice_key, lang_value))
                submission = studio.submit_single(Upload.of(voice_path) if voice_path else None, text_value or "",
                                                  Upload.of(presenter_path) if presenter_path else None, options,
                                                  lang_value)
            except StudioError as error:
                return gr.skip(), f"⚠ {error}"
            return submission.request_id, t("msg_submitted", lang_value, request=submission.request_id)

        def generate_batch(voice_paths, presenter_paths, picked_voices, picked_presenters, name_value, replace_value,
                           voice_key, engine, subtitles, quality, lang_value):
            try:
                options = StudioOptions(engine, subtitles, quality, studio.voice_choice(voice_key, lang_value))
                submission = studio.submit_batch([Upload.of(p) for p in voice_paths or []],
                                                 [Upload.of(p) for p in presenter_paths or []],
                                                 picked_voices or [], picked_presenters or [], name_value or "",
                                                 options, bool(replace_value), lang_value)
            except StudioError as error:
                return gr.skip(), f"⚠ {error}"
            message = t("msg_submitted", lang_value, request=submission.request_id)
            notes = "".join(f"\n\n⚠ {t('msg_skipped', lang_value, reason=n)}" for n in submission.notes)
            return submission.request_id, message + notes

        single_generate.click(generate_single, [voice, text, single_voice, presenter, *single_options, lang],
                              [single_request, single_progress], trigger_mode="once", concurrency_limit=4
                              ).then(None, [single_request], None, js=SET_URL)
        batch_generate.click(generate_batch, [voices, presenters, existing_voices, existing_presenters, name,
                                              replace, *batch_options, lang],
                             [batch_request, batch_progress], trigger_mode="once", concurrency_limit=4
                             ).then(None, [batch_request], None, js=SET_URL)

        def poll(single_id, batch_id, lang_value, shown_value):
            single_out, single_open = _single_view(studio, single_id, lang_value, shown_value[0])
            batch_out, batch_open = _batch_view(studio, batch_id, lang_value, shown_value[1])
            return (*single_out[:-1], *batch_out[:-1], (single_out[-1], batch_out[-1]),
                    gr.Timer(active=single_open or batch_open))

        view_outputs = [single_progress, single_video, single_files, batch_progress, pairs, gallery, zip_button,
                        manifest_button, shown, timer]
        view_inputs = [single_request, batch_request, lang, shown]
        timer.tick(poll, view_inputs, view_outputs, show_progress="hidden", concurrency_limit=None)
        # A new request shown (submitted, retried, opened from the history or the URL): show it now, then poll.
        single_request.change(poll, view_inputs, view_outputs, show_progress="hidden")
        batch_request.change(poll, view_inputs, view_outputs, show_progress="hidden")

        def cancel_request(batch_id, lang_value):
            if not batch_id:
                return t("msg_no_request", lang_value)
            try:
                studio.cancel(batch_id)
            except ApiError as error:
                return f"⚠ {t('msg_unreachable', lang_value, error=error)}"
            return t("msg_canceling", lang_value)

        cancel.click(cancel_request, [batch_request, lang], [batch_progress])

        def retry_request(batch_id, lang_value):
            if not batch_id:
                return gr.skip(), t("msg_no_request", lang_value)
            try:
                request_id = studio.retry_failed(batch_id, lang_value)
            except (StudioError, ApiError) as error:
                return gr.skip(), f"⚠ {error}"
            return request_id, t("msg_submitted", lang_value, request=request_id)

        retry.click(retry_request, [batch_request, lang], [batch_request, batch_progress]
                    ).then(None, [batch_request], None, js=SET_URL)

        def show_history(lang_value):
            try:
                return studio.history(lang_value)
            except ApiError as error:
                gr.Warning(t("msg_unreachable", lang_value, error=error))
                return gr.skip()

        refresh.click(show_history, [lang], [history])
        tab_history.select(show_history, [lang], [history])

        def open_request(lang_value, event: gr.SelectData):
            row = event.row_value or []
            request_id = str(row[-1]) if row else ""
            return request_id, gr.Tabs(selected="batch")

        history.select(open_request, [lang], [batch_request, tabs]).then(None, [batch_request], None, js=SET_URL)

        def relabel(lang_value):
            updates = [gr.update(label=t(key, lang_value), **_relabel_extras(studio, key, lang_value))
                       for _, key in labelled]
            return [f"## {t('title', lang_value)}\n{t('intro', lang_value)}",
                    gr.update(label=t("tab_single", lang_value)), gr.update(label=t("tab_batch", lang_value)),
                    gr.update(label=t("tab_history", lang_value)),
                    gr.update(value=t("generate", lang_value)), gr.update(value=t("generate", lang_value)),
                    gr.update(label=t("zip", lang_value)), gr.update(label=t("manifest", lang_value)),
                    gr.update(value=t("retry", lang_value)), gr.update(value=t("cancel", lang_value)),
                    gr.update(value=t("refresh", lang_value)), t("open_hint", lang_value),
                    gr.update(headers=[t(h, lang_value) for h in headers]),
                    gr.update(headers=[t(h, lang_value) for h in history_headers]),
                    *updates]

        lang.change(relabel, [lang], [title, tab_single, tab_batch, tab_history, single_generate, batch_generate,
                                      zip_button, manifest_button, retry, cancel, refresh, history_hint, pairs,
                                      history, *[c for c, _ in labelled]])

        def on_load(request: gr.Request):
            wanted = request.query_params.get("request", "") if request else ""
            language = browser_language(request.headers.get("accept-language") if request else None)
            voice_choices = _voice_choices(studio, language)  # the voices folder read again
            picks = (gr.update(choices=bucket_files(studio.bucket, "script")),
                     gr.update(choices=bucket_files(studio.bucket, "avatar")),
                     gr.update(choices=voice_choices), gr.update(choices=voice_choices))
            if not wanted:
                return language, "", "", gr.skip(), *picks, *[gr.skip()] * len(view_outputs)
            try:
                single = studio.status(wanted).campaign.startswith(SINGLE_PREFIX)
            except ApiError:
                single = False
            single_id, batch_id = (wanted, "") if single else ("", wanted)
            # The request's state comes with the page's first answer, not one round trip later.
            return (language, single_id, batch_id, gr.Tabs(selected="single" if single else "batch"), *picks,
                    *poll(single_id, batch_id, language, ("", "")))

        page.load(on_load, None, [lang, single_request, batch_request, tabs, existing_voices, existing_presenters,
                                  single_voice, batch_options[0], *view_outputs],
                  queue=False)  # straight away, not behind the queue's events
    return page


def _option_choices(kind: str, lang: str) -> list[tuple[str, str]]:
    keys = ("sidecar", "burn") if kind == "subtitles" else tuple(QUALITY_CRF)
    return [(t(f"{kind}_{key}", lang), key) for key in keys]


def _voice_choices(studio: Studio, lang: str) -> list[tuple[str, str]]:
    return [(t("voice_builtin", lang) if entry.key == BUILTIN_KEY else entry.label, entry.key)
            for entry in studio.voices()]


def _voice_dropdown(studio: Studio, prefix: str, label) -> gr.Dropdown:
    """Who speaks the request's text scripts: the built-in voice (the default) or one of the voices folder's."""
    return label(gr.Dropdown(_voice_choices(studio, "en"), value=BUILTIN_KEY, label=t("voice_choice", "en"),
                             info=t("voice_choice_info", "en"), elem_id=f"{prefix}-voice-choice"), "voice_choice")


def _relabel_extras(studio: Studio, key: str, lang: str) -> dict:
    """What a component shows besides its label, in ``lang``."""
    if key in ("subtitles", "quality"):
        return {"choices": _option_choices(key, lang)}
    if key == "voice_choice":
        return {"choices": _voice_choices(studio, lang), "info": t("voice_choice_info", lang)}
    return {}


def _options(studio: Studio, prefix: str, label, with_voice: bool) -> list:
    """The engine, subtitles and quality; ``with_voice``: the voice of the text scripts first, in the same row."""
    with gr.Row():
        voice = [_voice_dropdown(studio, prefix, label)] if with_voice else []
        engine = label(gr.Dropdown(list(studio.engines), value=studio.engines[0], label=t("engine", "en"),
                                   elem_id=f"{prefix}-engine"), "engine")
        subtitles = label(gr.Radio(_option_choices("subtitles", "en"), value="sidecar", label=t("subtitles", "en"),
                                   elem_id=f"{prefix}-subtitles"), "subtitles")
        quality = label(gr.Radio(_option_choices("quality", "en"), value="high", label=t("quality", "en"),
                                 elem_id=f"{prefix}-quality"), "quality")
    return [*voice, engine, subtitles, quality]


def _single_view(studio: Studio, request_id: str, lang: str, shown: str) -> tuple:
    """(progress text, video, downloads, what the video shows now: sent again only when it changes), and whether
    the request is still open."""
    if not request_id:
        return (gr.skip(), gr.skip(), gr.skip(), shown), False
    try:
        status = studio.status(request_id)
    except ApiError as error:
        return (describe_error(error, lang).headline, gr.skip(), gr.skip(), shown), True
    progress = describe(status, lang, studio.plain, studio.cache.typical_pair_seconds())
    pair = status.pairs[0] if status.pairs else None
    text = progress.headline
    if pair is not None and pair.sync_offset_frames is not None:
        text += f" · sync {pair.sync_offset_frames:+d}"
    if pair is not None and pair.error:
        text += f"\n\n⚠ {studio.plain(pair.error)}"
    video = pair.output if pair is not None and pair.output else ""
    key = f"{request_id}:{video}"
    if not video or key == shown:
        return (text, gr.skip(), gr.skip(), shown), not status.finished
    subtitles = next((s for s in pair.subtitles if s.endswith(".vtt")), None)
    files = [video, *pair.subtitles]
    return (text, gr.update(value=video, subtitles=subtitles), files, key), not status.finished


def _batch_view(studio: Studio, request_id: str, lang: str, shown: str) -> tuple:
    """(progress text, pairs table, gallery, zip and manifest buttons, the gallery's signature), and whether the
    request is still open."""
    if not request_id:
        return (gr.skip(),) * 5 + (shown,), False
    try:
        status = studio.status(request_id)
    except ApiError as error:
        return (describe_error(error, lang).headline,) + (gr.skip(),) * 4 + (shown,), True
    progress = describe(status, lang, studio.plain, studio.cache.typical_pair_seconds())
    key = f"{request_id}:{'|'.join(v for v, _ in progress.videos)}:{status.zip}"
    if key == shown:
        return (progress.headline, progress.rows, gr.skip(), gr.skip(), gr.skip(), shown), not status.finished
    existing = [(video, caption) for video, caption in progress.videos if Path(video).exists()]
    zip_update = gr.update(value=status.zip, visible=True) if status.zip else gr.update(visible=False)
    manifest_update = gr.update(value=status.manifest, visible=True) if status.manifest else gr.update(
        visible=False)
    return (progress.headline, progress.rows, existing, zip_update, manifest_update, key), not status.finished
