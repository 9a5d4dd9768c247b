"""`heygem`: the factory's command line.

Subcommands:
  demo    build the demo bucket and run it through the factory
  run     run every pair of a bucket's campaigns through Dagster on the local instance
  render  render one voice onto one avatar, outside Dagster (quick trial)
  ui      start the Dagster UI (webserver + daemon + workers) on this workspace
  studio  the web page for uploads, generation, progress, playback and downloads (starts what `ui` starts)
  worker  a Celery worker that executes the runs Dagster launches (for hosts of a scaled-out instance)
  submit  ask a running `heygem ui` to deliver a campaign or one pair (GraphQL); prints the request's id
  status  where a submitted request stands, pair by pair, with its outputs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from heygem_pipeline.errors import HeygemError
from heygem_pipeline.settings import DEFAULT_ENGINE, DEFAULT_FPS, DEFAULT_VOICE, ENGINE_NAMES, Settings

if TYPE_CHECKING:
    from heygem_pipeline.factory.voicing import Voice


@contextmanager
def progress_bar(label: str, unit: str = "frames") -> Iterator[Callable[[int, int | None], None]]:
    """A tqdm bar on stderr, fed by the stages' ``progress(done, total)`` callbacks (total may be unknown).

    Off when stderr is not a terminal (tqdm's ``disable=None``), so logs and pipes get no carriage returns."""
    from tqdm import tqdm

    with tqdm(desc=label, unit=f" {unit}", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        def update(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            if done != bar.n:
                bar.update(done - bar.n)

        yield update


def _voice(args: argparse.Namespace, settings: Settings) -> Voice:
    """The voice of a .txt script from --voice, --voice-model, --voice-vectors and --voice-speed over the settings;
    a bad value exits with one line naming the option."""
    from pydantic import ValidationError

    from heygem_pipeline.factory.voicing import default_voice

    model = args.voice_model or settings.voice_model
    try:
        return default_voice(voice=args.voice or settings.voice, model=model,
                             vectors=args.voice_vectors or (settings.voice_vectors if not args.voice_model else None),
                             speed=args.voice_speed or settings.voice_speed)
    except ValidationError as error:
        problem = error.errors()[0]
        raise SystemExit(f"heygem render: --voice-{problem['loc'][-1]}: {problem['msg']}") from None


def _render(args: argparse.Namespace) -> int:
    from heygem_pipeline.engine import stages
    from heygem_pipeline.engine.captions.burnin import subtitle_options
    from heygem_pipeline.engine.lipsync.registry import create_engine
    from heygem_pipeline.engine.media.files import atomic_output
    from heygem_pipeline.engine.media.frames import EncodeSettings
    from heygem_pipeline.engine.quality import measure_sync

    settings = Settings.from_env()
    # The engine is created (and its weights checked) before any media work starts.
    engine = create_engine(args.engine, checkpoint=args.checkpoint or settings.wav2lip_checkpoint,
                           models=args.models or settings.musetalk_models, batch_size=settings.wav2lip_batch_size)
    output = Path(args.output)
    encode = EncodeSettings(crf=settings.crf, preset=settings.preset, threads=settings.ffmpeg_threads)
    subtitles = subtitle_options(args.subtitles, "--subtitles")
    voice = _voice(args, settings)
    with tempfile.TemporaryDirectory(prefix="heygem-render-") as tmp:
        work = Path(tmp)
        print(f"analysing voice  {args.audio}", file=sys.stderr)
        limits = settings.tool_limits
        stages.prepare_script(args.audio, work / "script", voice=voice,
                                transcript=args.transcript, limits=limits)
        print(f"normalizing      {args.avatar}", file=sys.stderr)
        stages.prepare_avatar(args.avatar, work / "avatar", fps=args.fps, still_seconds=settings.still_seconds,
                                settings=encode, limits=limits)
        with progress_bar("tracking face") as progress:
            stages.track_avatar(work / "avatar", progress=progress, limits=limits)
        with progress_bar(f"rendering ({engine.name})") as progress:
            result = stages.render_pair(work / "script", work / "avatar", output, engine, settings=encode,
                                        progress=progress, subtitles=subtitles, limits=limits)
        sidecars = stages.write_subtitles(work / "script", output)
    if args.contact_sheet:
        with atomic_output(Path(args.contact_sheet)) as tmp:
            tmp.write_bytes(result.contact_sheet_png)
    line = (f"{output}: {result.duration_s:.2f} s, {result.frames} frames at {result.fps:g} fps, "
            f"{result.width}x{result.height}, engine {result.engine}, rendered at {result.render_fps:.1f} fps")
    line += f", subtitles {' + '.join(p.suffix[1:] for p in sidecars)}" if sidecars else ", no subtitles (no text)"
    if sidecars and subtitles.burn:
        line += " (burnt in)"
    if not args.no_check:
        sync = measure_sync(output)
        line += f", sync offset {sync.offset_frames:+d} frames (confidence {sync.confidence:.2f})"
    print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    return _run_bucket(args.bucket or Settings.from_env().bucket, args.campaign)


def _run_bucket(bucket: str, campaign: str | None = None) -> int:
    """``heygem run``: run, print the summary and failures; exit status 0 only when every pair is ok."""
    from heygem_pipeline.client.report import print_report
    from heygem_pipeline.client.run import FactoryError, run_factory

    try:
        report = run_factory(bucket, campaign)
    except FactoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    """``heygem demo``: build the demo bucket (offline), run it, say where everything is and how to see it."""
    from heygem_pipeline.demo import DEMO_BUCKET, build_demo_bucket, describe_bucket

    print(f"building the demo bucket in {DEMO_BUCKET}/ …", file=sys.stderr, flush=True)
    root = build_demo_bucket(DEMO_BUCKET)
    for line in describe_bucket(root):
        print(f"  {line}", file=sys.stderr)
    status = _run_bucket(str(root))
    print("\nOpen the Dagster UI on these runs with `make ui` (or `heygem ui`), then http://127.0.0.1:3000 "
          "(assets: the lineage graph; runs: every step of this demo).")
    return status


def _ui(args: argparse.Namespace) -> int:
    from heygem_pipeline.instance.ui import start_ui

    return start_ui(host=args.host, port=args.port)


def _studio(args: argparse.Namespace) -> int:
    from heygem_pipeline.studio.server import StudioSettings, read_auth, start_studio

    settings = StudioSettings(host=args.host, port=args.port, auth=read_auth(args.auth, args.auth_file),
                              no_auth=args.no_auth, bucket=args.bucket or Settings.from_env().bucket,
                              dagster_url=args.dagster_url or "", dagster_port=args.dagster_port,
                              max_upload=args.max_upload, voices=args.voices or "")
    return start_studio(settings)


def _submit(args: argparse.Namespace) -> int:
    from heygem_pipeline.api import FactoryClient

    client = FactoryClient(args.url)
    request = client.submit(campaign=args.campaign, script=args.script, avatar=args.avatar, bucket=args.bucket)
    print(request)
    if args.wait:
        return _print_status(client.wait(request, timeout=args.wait))
    return 0


def _status(args: argparse.Namespace) -> int:
    from heygem_pipeline.api import FactoryClient

    return _print_status(FactoryClient(args.url).status(args.request))


def _print_status(status) -> int:  # status: api.RequestStatus
    print(f"request {status.request_id}: {status.state.value}" + (f", campaign {status.campaign}, "
          f"{status.progress()} settled" if status.pairs else "") + (f": {status.error}" if status.error else ""))
    for pair in status.pairs:
        where = pair.output or pair.error
        print(f"  {pair.script} × {pair.avatar}: {pair.state.value}" + (f"  {where}" if where else ""))
    failed = status.state.value == "failed" or any(p.state.value == "failed" for p in status.pairs)
    return 1 if failed else 0


def _models_check(args: argparse.Namespace) -> int:
    from heygem_pipeline.engine.lipsync.musetalk.engine import resolve_models
    from heygem_pipeline.engine.lipsync.musetalk.model import check_models

    folder = resolve_models(args.folder or Settings.from_env().musetalk_models)
    checks = check_models(folder)
    for check in checks:
        state = f"ok ({check.tensors} tensors as expected)" if check.ok else check.problem
        print(f"{check.network:<12} {', '.join(check.files)}: {state}")
    bad = sum(not c.ok for c in checks)
    print(f"{folder}: " + (f"{bad} of {len(checks)} networks cannot be used" if bad else "every network loads"))
    return 1 if bad else 0


def _worker(args: argparse.Namespace) -> int:
    from heygem_pipeline.instance.worker import run_worker

    run_worker([q for q in args.queues.split(",") if q], args.concurrency, args.name, args.loglevel)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heygem", description="HeyGem Pipeline: a content factory for lip-synced "
                                     "presenter videos. Configuration comes from HEYGEM_* environment variables "
                                     "(see the README).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="build the demo bucket (offline) and run it through the factory",
                               description="Build data/demo-bucket (voices by espeak-ng, avatars from a "
                               "public-domain portrait) and render every pair through Dagster.")
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="render every missing pair of a bucket's campaigns through Dagster",
                              description="Register the bucket's scripts and avatars as partitions, materialize "
                              "every pair of its campaigns on the local Dagster instance, and write each "
                              "campaign's videos, manifest and zip. Exits non-zero if any pair failed.")
    run.add_argument("--bucket", help="fsspec URL or local path of the bucket (default: $HEYGEM_BUCKET or "
                     "data/bucket)")
    run.add_argument("--campaign", help="only this campaign (default: all)")
    run.set_defaults(handler=_run)

    render = commands.add_parser("render", help="render one voice onto one avatar (no Dagster)",
                                 description="Quick trial: normalize a raw voice track and a raw avatar, track the "
                                 "face, render the lip-synced video and measure its A/V sync.")
    render.add_argument("--audio", required=True, help="voice track (wav, mp3, m4a, flac, ogg, opus, a video "
                        "with sound, or a .txt voiced by espeak-ng)")
    render.add_argument("--avatar", required=True, help="presenter template video or photo")
    render.add_argument("-o", "--output", required=True, help="output .mp4")
    render.add_argument("--engine", default=None, choices=ENGINE_NAMES,
                        help=f"lip-sync engine (default: $HEYGEM_ENGINE or {DEFAULT_ENGINE})")
    render.add_argument("--checkpoint", help="wav2lip.pth / wav2lip_gan.pth for --engine wav2lip "
                        "(default: $HEYGEM_WAV2LIP_CHECKPOINT)")
    render.add_argument("--models", metavar="DIR", help="MuseTalk 1.5's weights folder for --engine musetalk "
                        "(musetalkV15/, sd-vae/, whisper/, face-parse-bisent/; default: $HEYGEM_MUSETALK_MODELS)")
    render.add_argument("--fps", type=float, default=None,
                        help=f"output frame rate (default: $HEYGEM_FPS or {DEFAULT_FPS:g})")
    render.add_argument("--voice", help=f"who speaks a .txt script: an espeak-ng voice, or with --voice-model its "
                        f"speaker (af_heart…) (default: $HEYGEM_VOICE or {DEFAULT_VOICE})")
    render.add_argument("--voice-model", metavar="ONNX", help="a Piper voice (.onnx, its .onnx.json beside it) or a "
                        "Kokoro model (with --voice-vectors) for .txt scripts (default: $HEYGEM_VOICE_MODEL)")
    render.add_argument("--voice-vectors", metavar="FILE", help="the Kokoro model's voices file, voices-v1.0.bin "
                        "(default: $HEYGEM_VOICE_VECTORS)")
    render.add_argument("--voice-speed", type=float, default=None, help="pace of --voice-model (1: its own; "
                        "default: $HEYGEM_VOICE_SPEED or 1)")
    render.add_argument("--transcript", help="UTF-8 text of what an audio script says: captions are timed to it "
                        "(.txt scripts need none)")
    render.add_argument("--subtitles", choices=("sidecar", "burn"), default="sidecar",
                        help="sidecar: .srt and .vtt beside the output (default); burn: also burnt into the picture")
    render.add_argument("--contact-sheet", metavar="PNG", help="also write one image of mouths: the template's, then "
                        "the output's at the loudest and at the quietest moments")
    render.add_argument("--no-check", action="store_true", help="skip the A/V sync measurement")
    render.set_defaults(handler=_render)

    ui = commands.add_parser("ui", help="start the Dagster UI (webserver, daemon, workers) on this workspace",
                             description="Start the Dagster webserver on the persistent instance in $DAGSTER_HOME "
                             "(default .dagster_home/), with the daemon, broker and workers its runs need; "
                             "`heygem run` started meanwhile uses them.")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=_ui)

    studio = commands.add_parser("studio", help="the web page: upload, generate, follow, watch, download",
                                 description="Serve the studio page (default http://127.0.0.1:7860) with the Dagster "
                                 "webserver, daemon and workers behind it (or the webserver at --dagster-url).")
    studio.add_argument("--host", default="127.0.0.1", help="address to serve on (default %(default)s; any other "
                        "needs --auth or --no-auth)")
    studio.add_argument("--port", type=int, default=7860)
    studio.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD", help="a login (repeatable)")
    studio.add_argument("--auth-file", metavar="FILE", help="logins, one user:password a line")
    studio.add_argument("--no-auth", action="store_true", help="serve another address without a login")
    studio.add_argument("--bucket", help="the bucket uploads go to (default: $HEYGEM_BUCKET or data/bucket)")
    studio.add_argument("--dagster-url", help="use the Dagster webserver already running there")
    studio.add_argument("--dagster-port", type=int, default=3000, help="port of the webserver it starts "
                        "(default %(default)s)")
    studio.add_argument("--max-upload", default="2gb", help="largest upload (default %(default)s)")
    studio.add_argument("--voices", metavar="DIR", help="the folder of Piper and Kokoro voices the page offers for "
                        "text (default: $HEYGEM_VOICES_DIR or ~/.local/share/heygem/voices; missing: only the "
                        "built-in espeak-ng voice)")
    studio.set_defaults(handler=_studio)

    submit = commands.add_parser("submit", help="ask a running `heygem ui` to deliver a campaign or one pair",
                                 description="Submit a request to the factory's Dagster webserver (GraphQL): a "
                                 "campaign, or one script × avatar pair of it, brought up to date and delivered. "
                                 "Prints the request's id (see `heygem status`).")
    submit.add_argument("--url", default="http://127.0.0.1:3000", help="the webserver (default %(default)s)")
    submit.add_argument("--campaign", help="campaign file name, stem or id (default: the only one, or default)")
    submit.add_argument("--script", help="with --avatar: only this pair")
    submit.add_argument("--avatar", help="with --script: only this pair")
    submit.add_argument("--bucket", help="the bucket (default: the one the UI's factory uses)")
    submit.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to SECONDS and print the result")
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="where a submitted request stands, pair by pair",
                                 description="Query a request's state, each pair's stage and, once delivered, the "
                                 "paths of its videos and subtitles. Exits non-zero if the request or a pair failed.")
    status.add_argument("request", help="the id `heygem submit` printed")
    status.add_argument("--url", default="http://127.0.0.1:3000", help="the webserver (default %(default)s)")
    status.set_defaults(handler=_status)

    worker = commands.add_parser("worker", help="run a Celery worker for the instance in $DAGSTER_HOME",
                                 description="Execute the runs Dagster launches on the given Celery queues: gpu "
                                 "(renders; one worker per GPU, concurrency 1) or cpu (intake, checks, "
                                 "deliverables). For the hosts of a scaled-out instance (README, Scaling out).")
    worker.add_argument("--queues", default="gpu", help="comma-separated: gpu, cpu (default gpu)")
    worker.add_argument("--concurrency", type=int, default=1, help="runs at once (default 1)")
    worker.add_argument("--name", help="worker name (default <queues>-<pid>@<host>)")
    worker.add_argument("--loglevel", default="WARNING")
    worker.set_defaults(handler=_worker)

    models = commands.add_parser("models", help="check downloaded model weights")
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="check")
    check = models_commands.add_parser("check", help="load each network of a MuseTalk 1.5 weights folder strictly "
                                       "and report its files (found, every key and shape as expected)")
    check.add_argument("folder", nargs="?", help="the weights folder (default: $HEYGEM_MUSETALK_MODELS)")
    check.set_defaults(handler=_models_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help works whatever the environment holds
    try:
        settings = Settings.from_env()  # a bad HEYGEM_* variable: one line naming it (SettingsError), status 2
        if getattr(args, "engine", "x") is None:
            args.engine = settings.engine
        if getattr(args, "fps", 0) is None:
            args.fps = settings.fps
        return args.handler(args)
    except HeygemError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
