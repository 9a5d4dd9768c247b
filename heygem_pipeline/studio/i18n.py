"""The studio's words in English and Simplified Chinese: labels and the messages made in Python (stages, errors,
progress). One table, so the language switch relabels the whole page and every status line."""

from __future__ import annotations

LANGUAGES = {"en": "English", "zh": "中文"}

TEXT: dict[str, tuple[str, str]] = {
    # key: (English, Simplified Chinese)
    "title": ("HeyGem Studio: lip-synced presenter videos", "HeyGem 工作室：口型同步的数字人视频"),
    "intro": ("Upload a voice and a presenter, press Generate, and download the videos. Everything runs on this "
              "machine; nothing is uploaded anywhere else.",
              "上传声音和主持人，点击生成，然后下载视频。全部在本机运行，不会上传到别处。"),
    "language": ("Language", "语言"),
    "tab_single": ("Try one", "单个试做"),
    "tab_batch": ("Batch", "批量"),
    "tab_history": ("History", "历史"),
    "voice_file": ("Voice (audio file, or a video whose sound is the voice)", "声音（音频文件，或带人声的视频）"),
    "voice_text": ("…or type what the presenter says: voiced offline, or the subtitles of the voice file",
                   "……或输入主持人要说的话：离线合成，或作为声音文件的字幕"),
    "voice_choice": ("Voice for text", "文字朗读音色"),
    "voice_choice_info": ("Speaks typed text and .txt scripts only; an uploaded audio or video keeps its own voice. "
                          "The default is the factory's (espeak-ng unless HEYGEM_VOICE_MODEL is set).",
                          "仅用于朗读输入的文字和 .txt 脚本；上传的音频或视频保留原声。默认音色由工厂设置决定"
                          "（未设置 HEYGEM_VOICE_MODEL 时为 espeak-ng）。"),
    "voice_builtin": ("Default voice", "默认音色"),
    "presenter_file": ("Presenter (video or photo)", "主持人（视频或照片）"),
    "engine": ("Engine", "引擎"),
    "subtitles": ("Subtitles", "字幕"),
    "subtitles_sidecar": ("files (.srt, .vtt)", "字幕文件（.srt、.vtt）"),
    "subtitles_burn": ("burnt into the picture", "压制到画面中"),
    "quality": ("Quality", "画质"),
    "quality_high": ("high", "高"),
    "quality_standard": ("standard", "标准"),
    "quality_small": ("small files", "小文件"),
    "replace": ("Replace files with the same name (their videos are made again)",
                "替换同名文件（相关视频会重新生成）"),
    "generate": ("Generate", "生成"),
    "progress": ("Progress", "进度"),
    "video": ("Result", "结果"),
    "downloads": ("Downloads", "下载"),
    "batch_voices": ("Voices (drop several files; welcome.txt beside welcome.wav is its subtitles' text, a .txt "
                     "alone is voiced offline)",
                     "声音（可拖入多个文件；与 welcome.wav 同名的 welcome.txt 是其字幕文本，单独的 .txt 会离线合成）"),
    "batch_presenters": ("Presenters (drop several files)", "主持人（可拖入多个文件）"),
    "batch_existing_voices": ("…or voices already in the bucket", "……或选择已有的声音"),
    "batch_existing_presenters": ("…or presenters already in the bucket", "……或选择已有的主持人"),
    "batch_name": ("Campaign name", "活动名称"),
    "batch_pairs": ("Pairs", "配对"),
    "batch_gallery": ("Videos", "视频"),
    "zip": ("Download the zip", "下载 zip"),
    "manifest": ("Download the manifest", "下载清单"),
    "retry": ("Retry failed", "重试失败项"),
    "cancel": ("Cancel", "取消"),
    "history_table": ("Past requests", "历史请求"),
    "refresh": ("Refresh", "刷新"),
    "open_hint": ("Select a row to open it in the Batch tab.", "选择一行，在“批量”页中打开。"),
    # columns
    "col_voice": ("voice", "声音"),
    "col_presenter": ("presenter", "主持人"),
    "col_state": ("state", "状态"),
    "col_seconds": ("seconds", "秒"),
    "col_sync": ("sync (frames)", "同步（帧）"),
    "col_reason": ("reason", "原因"),
    "col_campaign": ("campaign", "活动"),
    "col_when": ("when", "时间"),
    "col_pairs": ("pairs", "配对"),
    "col_request": ("request", "请求"),
    # states (api.PairProgressState / RequestState values)
    "waiting": ("waiting", "等待中"),
    "preparing": ("preparing the voice and tracking the face", "正在处理声音并跟踪人脸"),
    "queued": ("queued", "排队中"),
    "rendering": ("rendering", "正在渲染"),
    "checking": ("checking", "正在检查"),
    "rendered": ("done", "完成"),
    "up to date": ("done (up to date)", "完成（已是最新）"),
    "failed": ("failed", "失败"),
    "canceled": ("canceled", "已取消"),
    "planning": ("planning", "正在规划"),
    "running": ("running", "进行中"),
    "done": ("done", "完成"),
    # messages
    "msg_progress": ("{settled}/{total} pairs", "{settled}/{total} 个配对"),
    "msg_eta": ("about {eta} left", "预计还需 {eta}"),
    "msg_eta_unknown": ("time left: known after the first video", "剩余时间：第一个视频完成后可知"),
    "msg_need_voice": ("Add a voice: upload an audio file or type a text.", "请添加声音：上传音频文件或输入文字。"),
    "msg_unknown_voice": ("That voice is no longer in the voices folder: reload the page and pick another.",
                          "该音色已不在音色文件夹中：请刷新页面后另选一个。"),
    "msg_need_presenter": ("Add a presenter: upload a video or a photo.", "请添加主持人：上传视频或照片。"),
    "msg_need_voices": ("Add at least one voice.", "请至少添加一个声音。"),
    "msg_need_presenters": ("Add at least one presenter.", "请至少添加一个主持人。"),
    "msg_submitted": ("Request {request} submitted.", "已提交请求 {request}。"),
    "msg_unreachable": ("The factory does not answer: {error}", "工厂无响应：{error}"),
    "msg_nothing_failed": ("Nothing failed: nothing to retry.", "没有失败项，无需重试。"),
    "msg_canceling": ("Canceling: the runs are being stopped.", "正在取消：正在停止运行。"),
    "msg_no_request": ("No request yet.", "尚无请求。"),
    "msg_skipped": ("Not used: {reason}", "未使用：{reason}"),
}


def t(key: str, lang: str, **values: object) -> str:
    """``key``'s text in ``lang`` ("en" or "zh"), with ``values`` filled in; an unknown key is shown as it is."""
    english, chinese = TEXT.get(key, (key, key))
    text = chinese if lang == "zh" else english
    return text.format(**values) if values else text


def browser_language(accept_language: str | None) -> str:
    """The page's language from the browser's ``Accept-Language``: Chinese when it comes before English."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"
