"""Where everything lives in the bucket: upload prefixes, work/ and outputs/ paths.

Bucket layout (``HEYGEM_BUCKET``; a local path, ``file://``, ``memory://``, ``s3://``…)::

    scripts/<name>.<audio|video|txt>         uploads (voice tracks)
    avatars/<name>.<video|image>             uploads (presenter templates)
    transcripts/<script stem>.txt            optional: what an audio script says (captions are timed to it)
    campaigns/<campaign>.yaml                optional: which scripts × avatars, engine, output and subtitle options
    work/scripts/<script>/…                  prepared script (normalized audio, Mel + visemes) + stamp.json
    work/scripts/<script>@<voice variant>/…  the same, for a text voiced by a campaign's own voice
    work/avatars/<avatar>/…                  normalized template + video.stamp.json, face track + track.stamp.json
    work/renders/<variant>/<script>/<avatar>.mp4 (+ .json record, .quality.json)
    work/errors/<stage>/<key>.json           the last failure of a stage, until it succeeds
    work/campaigns/<campaign>.json           what the deliverables were built from
    outputs/<campaign>/<script>__<avatar>.mp4 (+ .srt, .vtt), manifest.csv, manifest.parquet, <campaign>.zip
"""

from __future__ import annotations

from heygem_pipeline.engine.audio.intake import SCRIPT_EXTENSIONS
from heygem_pipeline.engine.avatar import AVATAR_EXTENSIONS
from heygem_pipeline.factory.bucket import Bucket

SCRIPTS_PREFIX = "scripts"
AVATARS_PREFIX = "avatars"
CAMPAIGNS_PREFIX = "campaigns"
TRANSCRIPTS_PREFIX = "transcripts"
OUTPUTS_PREFIX = "outputs"
CAMPAIGN_EXTENSIONS = frozenset({"yaml", "yml"})
EXTENSIONS = {"script": SCRIPT_EXTENSIONS, "avatar": AVATAR_EXTENSIONS}
PREFIXES = {"script": SCRIPTS_PREFIX, "avatar": AVATARS_PREFIX}
SUBTITLE_SIDECARS = (".srt", ".vtt")


def script_dir(bucket: Bucket, script: str) -> str:
    return bucket.work("scripts", script)


def avatar_dir(bucket: Bucket, avatar: str) -> str:
    return bucket.work("avatars", avatar)


def script_stamp_path(bucket: Bucket, script: str) -> str:
    return f"{script_dir(bucket, script)}/stamp.json"


def avatar_stamp_path(bucket: Bucket, avatar: str) -> str:
    return f"{avatar_dir(bucket, avatar)}/video.stamp.json"


def track_stamp_path(bucket: Bucket, avatar: str) -> str:
    return f"{avatar_dir(bucket, avatar)}/track.stamp.json"


def render_path(bucket: Bucket, variant: str, script: str, avatar: str) -> str:
    # One folder per script keeps names unambiguous whatever the ids contain.
    return bucket.work("renders", variant, script, f"{avatar}.mp4")


def render_record_path(bucket: Bucket, variant: str, script: str, avatar: str) -> str:
    return render_path(bucket, variant, script, avatar)[: -len(".mp4")] + ".json"


def quality_record_path(bucket: Bucket, variant: str, script: str, avatar: str) -> str:
    return render_path(bucket, variant, script, avatar)[: -len(".mp4")] + ".quality.json"


def error_path(bucket: Bucket, stage: str, key: str) -> str:
    return bucket.work("errors", stage, f"{key}.json")


def campaign_record_path(bucket: Bucket, campaign: str) -> str:
    return bucket.work("campaigns", f"{campaign}.json")


def outputs_dir(campaign: str) -> str:
    return f"{OUTPUTS_PREFIX}/{campaign}"


def manifest_csv_path(campaign: str) -> str:
    return f"{outputs_dir(campaign)}/manifest.csv"


def manifest_parquet_path(campaign: str) -> str:
    return f"{outputs_dir(campaign)}/manifest.parquet"


def zip_path(campaign: str) -> str:
    return f"{outputs_dir(campaign)}/{campaign}.zip"


def pair_key_text(script: str, avatar: str) -> str:
    """The pair as Dagster writes a multi-partition key (dimensions in alphabetical order: avatar|script)."""
    return f"{avatar}|{script}"


def render_error_key(variant: str, script: str, avatar: str) -> str:
    return f"{variant}.{script}.{avatar}"
