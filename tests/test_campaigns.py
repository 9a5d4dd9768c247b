"""The factory's bookkeeping without Dagster or media: buckets, uploads, campaigns, staleness, manifest, zip."""

from __future__ import annotations

import io
import os
import time
import uuid
import zipfile

import pandas as pd
import pytest

from heygem_pipeline.engine.audio.voices.choice import EspeakChoice
from heygem_pipeline.engine.captions.burnin import SubtitleOptions
from heygem_pipeline.engine.captions.cues import CaptionTrack, build_cues
from heygem_pipeline.engine.captions.text import Word
from heygem_pipeline.errors import InputError, NotInBucketError
from heygem_pipeline.factory.bucket import Bucket, BucketEntry
from heygem_pipeline.factory.campaigns import (
    DEFAULT_CAMPAIGN,
    CampaignError,
    MediaOptions,
    RenderOptions,
    parse_campaign,
)
from heygem_pipeline.factory.deliver import MANIFEST_COLUMNS, output_names, write_manifest, write_zip
from heygem_pipeline.factory.layout import (
    avatar_stamp_path,
    quality_record_path,
    render_path,
    render_record_path,
    script_dir,
    script_stamp_path,
    track_stamp_path,
)
from heygem_pipeline.factory.plan import plan_work
from heygem_pipeline.factory.state import (
    CHECK_FAILED,
    CODE_VERSIONS,
    FAILED,
    MISSING,
    OK,
    STALE,
    UNCHECKED,
    FactoryState,
    avatar_token,
    render_inputs_token,
    script_token,
    stamp,
    track_token,
    write_error,
)
from heygem_pipeline.factory.uploads import classify, find_upload, scan_bucket, settled_since

MEDIA = MediaOptions()
DEFAULTS = RenderOptions()


def put(bucket: Bucket, rel: str, data: bytes = b"x" * 10) -> None:
    bucket.write_bytes(rel, data)


# ------------------------------------------------------------------------------------------------ bucket


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_bucket_writes_are_atomic_and_listing_skips_folders(kind: str, tmp_path) -> None:
    bucket = Bucket(f"memory://atomic-{uuid.uuid4().hex[:8]}" if kind == "memory" else str(tmp_path / "bucket"))
    bucket.write_json("work/a/record.json", {"n": 1})
    bucket.write_bytes("scripts/hello.wav", b"RIFF....")
    assert bucket.read_json("work/a/record.json") == {"n": 1}
    assert bucket.read_json("work/a/absent.json") is None
    entries = bucket.list_files("scripts")
    assert [e.rel for e in entries] == ["scripts/hello.wav"] and entries[0].size == 8
    assert bucket.list_files("work") == []  # only folders there
    assert bucket.list_files("nowhere") == []
    local = tmp_path / "upload.bin"
    local.write_bytes(b"payload")
    bucket.upload(local, "outputs/c/file.bin")
    bucket.copy("outputs/c/file.bin", "outputs/c/copy.bin")
    assert bucket.read_bytes("outputs/c/copy.bin") == b"payload"
    # No temporary names are left behind.
    assert sorted(e.name for e in bucket.list_files("outputs/c")) == ["copy.bin", "file.bin"]
    with bucket.local_file("outputs/c/copy.bin") as path:
        assert path.name == "copy.bin" and path.read_bytes() == b"payload"
    with bucket.local_folder("work/stage", outputs=("out.txt",)) as folder:
        (folder / "out.txt").write_text("done")
    assert bucket.read_bytes("work/stage/out.txt") == b"done"


def test_memory_bucket_is_process_local(memory_bucket: Bucket, tmp_path) -> None:
    assert memory_bucket.is_process_local and not memory_bucket.is_local
    local = Bucket(str(tmp_path))
    assert local.is_local and not local.is_process_local
    assert Bucket(f"file://{tmp_path}").is_local


# ------------------------------------------------------------------------------------------------ uploads


def entry(rel: str, size: int = 100, version: str = "1", modified: float | None = None) -> BucketEntry:
    return BucketEntry(rel=rel, size=size, version=version, modified=modified)


def test_classify_skips_hidden_unsupported_empty_and_ambiguous_names() -> None:
    uploads, skipped = classify("script", [
        entry("scripts/Hello World.wav"), entry("scripts/.DS_Store"), entry("scripts/._hello.wav"),
        entry("scripts/notes.pdf"), entry("scripts/empty.mp3", size=0), entry("scripts/promo.wav"),
        entry("scripts/promo.mp3"), entry("scripts/speech.txt"), entry("scripts/noext"),
    ])
    assert sorted(uploads) == ["hello_world_" + uploads[next(iter(uploads))].key[-8:], "speech"]
    hello = next(u for u in uploads.values() if u.name == "Hello World.wav")
    assert hello.key.startswith("hello_world_") and hello.key == hello.key.lower()
    reasons = {s.rel: s.reason for s in skipped}
    assert reasons["scripts/.DS_Store"] == reasons["scripts/._hello.wav"] == "hidden file"
    assert "not a script format" in reasons["scripts/notes.pdf"]
    assert "empty" in reasons["scripts/empty.mp3"]
    assert "ambiguous" in reasons["scripts/promo.wav"] and "ambiguous" in reasons["scripts/promo.mp3"]
    assert "no file extension" in reasons["scripts/noext"]


def test_ids_are_stable_and_collision_free() -> None:
    first, _ = classify("avatar", [entry("avatars/Anna Smith.mp4"), entry("avatars/anna_smith.png")])
    again, _ = classify("avatar", [entry("avatars/Anna Smith.mp4"), entry("avatars/anna_smith.png")])
    assert sorted(first) == sorted(again) and len(first) == 2  # different names never share an id
    assert "anna_smith" in first


def test_find_upload_explains_missing_and_ambiguous(memory_bucket: Bucket) -> None:
    put(memory_bucket, "avatars/anna.mp4")
    assert find_upload(memory_bucket, "avatar", "anna").name == "anna.mp4"
    with pytest.raises(InputError, match="no avatar upload"):
        find_upload(memory_bucket, "avatar", "bob")
    put(memory_bucket, "avatars/anna.png")
    with pytest.raises(InputError, match="ambiguous"):
        find_upload(memory_bucket, "avatar", "anna")


def test_settled_needs_two_identical_looks_or_an_old_file() -> None:
    now = 1_000_000.0
    fresh = entry("scripts/a.wav", size=10, version=str(now - 5), modified=now - 5)
    settled = settled_since({}, now=now, settle_seconds=60)
    assert not settled(fresh)  # first look at a file written 5 s ago
    assert settled_since({"scripts/a.wav": fresh.fingerprint}, now=now)(fresh)  # same size and time as before
    grown = entry("scripts/a.wav", size=20, version=str(now - 1), modified=now - 1)
    assert not settled_since({"scripts/a.wav": fresh.fingerprint}, now=now)(grown)  # still being written
    assert settled(entry("scripts/old.wav", version=str(now - 600), modified=now - 600))
    assert not settled(entry("s3/etag.wav", version="d41d8cd98f00"))  # no time to judge: wait for a second look
    # S3: the version is the ETag, the age is LastModified's.
    assert not settled(entry("s3/new.wav", version="d41d8cd98f00b204e9800998ecf8427e", modified=now - 5))
    assert settled(entry("s3/old.wav", version="d41d8cd98f00b204e9800998ecf8427e", modified=now - 600))


# ----------------------------------------------------------------------------------------------- campaigns


def test_campaign_yaml_names_globs_engine_and_output_options() -> None:
    campaign = parse_campaign("scripts: [welcome, 'promo_*']\navatars: ['anna.mp4']\nengine: viseme\n"
                              "output: {crf: 23, preset: fast}\n", "Spring Launch.yaml")
    assert campaign.key.startswith("spring_launch_")
    assert campaign.render_options(DEFAULTS) == RenderOptions(engine="viseme", crf=23, preset="fast")
    scripts, _ = classify("script", [entry("scripts/welcome.wav"), entry("scripts/promo_a.mp3"),
                                     entry("scripts/promo_b.txt"), entry("scripts/other.wav")])
    avatars, _ = classify("avatar", [entry("avatars/anna.mp4"), entry("avatars/bob.png")])
    assert campaign.pairs(scripts, avatars) == [("promo_a", "anna"), ("promo_b", "anna"), ("welcome", "anna")]
    everything = parse_campaign("{}", "all.yml")
    assert len(everything.pairs(scripts, avatars)) == 8
    assert everything.render_options(DEFAULTS) == DEFAULTS


ALLOWED = "avatars, checkpoint, crf, description, engine, models, name, output, preset, scripts, subtitles, voice"


@pytest.mark.parametrize("text, problem", [
    ("scripts: [a\n", "bad.yaml: not valid YAML (while parsing a flow sequence"),
    ("- a\n- b\n", "bad.yaml: expected a mapping with 'scripts:' and 'avatars:' lists"),
    ("scripts: [a]\nvoices: [x]\n", f"bad.yaml: unknown key 'voices'; allowed: {ALLOWED}"),
    ("enigne: viseme\nvoices: [x]\n", f"bad.yaml: unknown keys 'enigne', 'voices'; allowed: {ALLOWED}"),
    ("engine: magic\n", "bad.yaml: engine: unknown engine 'magic'; choose one of viseme, wav2lip, musetalk"),
    ("crf: 99\n", "bad.yaml: crf: must be an integer from 0 to 51, got 99"),
    ("crf: abc\n", "bad.yaml: crf: must be an integer from 0 to 51, got 'abc'"),
    ("crf: 18.5\n", "bad.yaml: crf: must be an integer from 0 to 51, got 18.5"),
    ("output: {crf: -1}\n", "bad.yaml: output.crf: must be an integer from 0 to 51, got -1"),
    ("output: {quality: high}\n", "bad.yaml: output: unknown key 'quality'; allowed: crf, preset"),
    ("output: fast\n", "bad.yaml: output: must be a mapping with 'crf:' and/or 'preset:', got 'fast'"),
    ("preset: [fast]\n", "bad.yaml: preset: must be an ffmpeg preset name such as veryfast, got ['fast']"),
    ("scripts: {a: 1}\n", "bad.yaml: scripts: must be a name or glob, or a list of names or globs, got {'a': 1}"),
    ("avatars: [anna, 1.5]\n", "bad.yaml: avatars: must be a name or glob, or a list of names or globs, got "
                               "['anna', 1.5]"),
    ("checkpoint: 7\n", "bad.yaml: checkpoint: must be the path of a wav2lip .pth file, got 7"),
    ("subtitles: {mode: burn, size: 40}\n",
     "bad.yaml: subtitles.size: Input should be less than or equal to 15 (got 40)"),
    ("engine: magic\ncrf: 99\n",
     "bad.yaml: engine: unknown engine 'magic'; choose one of viseme, wav2lip, musetalk; and 1 more"),
])
def test_bad_campaign_files_are_explained_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(CampaignError) as caught:
        parse_campaign(text, "bad.yaml")
    assert str(caught.value).startswith(problem) and "\n" not in str(caught.value)
    assert isinstance(caught.value, InputError) and caught.value.path == "bad.yaml"  # a user's file: no retry


def test_campaign_files_accept_single_names_numbers_and_top_level_output_options() -> None:
    campaign = parse_campaign("scripts: welcome\navatars: [anna, 7]\ncrf: 20\noutput: {crf: 30, preset: slow}\n"
                              "name: Spring\ndescription: 2024 launch\n", "spring.yaml", "fingerprint")
    assert campaign.scripts == ("welcome",) and campaign.avatars == ("anna", "7")
    assert (campaign.crf, campaign.preset, campaign.fingerprint) == (20, "slow", "fingerprint")  # top level wins
    assert parse_campaign("", "empty.yaml") == parse_campaign("scripts: ['*']\n", "empty.yaml")
    assert parse_campaign("scripts:\n", "null.yaml").scripts == ("*",)


def test_scan_uses_campaign_files_or_the_implicit_default(memory_bucket: Bucket) -> None:
    put(memory_bucket, "scripts/welcome.wav")
    put(memory_bucket, "avatars/anna.mp4")
    put(memory_bucket, "avatars/.hidden.mp4")
    scan = scan_bucket(memory_bucket)
    assert list(scan.campaigns) == [DEFAULT_CAMPAIGN]
    assert scan.campaign_pairs(scan.campaigns[DEFAULT_CAMPAIGN]) == [("welcome", "anna")]
    assert [s.rel for s in scan.skipped] == ["avatars/.hidden.mp4"]
    put(memory_bucket, "campaigns/launch.yaml", b"scripts: [welcome]\navatars: [anna]\n")
    put(memory_bucket, "campaigns/broken.yaml", b"engine: magic\n")
    scan = scan_bucket(memory_bucket)
    assert list(scan.campaigns) == ["launch"]  # no implicit default once campaign files exist
    assert any(s.rel == "campaigns/broken.yaml" and "unknown engine" in s.reason for s in scan.skipped)


def test_a_campaign_and_a_pair_by_the_names_users_give(memory_bucket: Bucket) -> None:
    """`heygem run --campaign` and API requests pick campaigns and pairs by one rule: id, file name or stem."""
    put(memory_bucket, "scripts/Welcome Take.wav")
    put(memory_bucket, "avatars/anna.mp4")
    scan = scan_bucket(memory_bucket)
    assert scan.campaign(None).key == DEFAULT_CAMPAIGN  # the only one
    put(memory_bucket, "campaigns/Launch Day.yaml", b"scripts: ['*']\navatars: ['*']\n")
    put(memory_bucket, "campaigns/other.yaml", b"scripts: []\n")
    scan = scan_bucket(memory_bucket)
    launch = scan.campaigns["launch_day_ca89fd59"]  # an unsafe name's id carries a digest
    assert scan.campaign("Launch Day") is scan.campaign("Launch Day.yaml") is scan.campaign(launch.key) is launch
    with pytest.raises(NotInBucketError, match=r"no campaign '\(unnamed\)' in the bucket \(campaigns: launch_day_"):
        scan.campaign(None)  # two campaigns, no default: say which there are
    assert scan.pair(launch, "Welcome Take.wav", "anna") == scan.pair(launch, "welcome_take_89b197b6", "anna.mp4")
    with pytest.raises(NotInBucketError, match="no avatar 'bob'"):
        scan.pair(launch, "Welcome Take", "bob")
    with pytest.raises(NotInBucketError, match="is not a pair of campaign other"):
        scan.pair(scan.campaign("other"), "Welcome Take", "anna")


def test_unsettled_files_wait(memory_bucket: Bucket) -> None:
    put(memory_bucket, "scripts/welcome.wav")
    scan = scan_bucket(memory_bucket, settled=lambda e: False)
    assert scan.scripts == {} and [e.rel for e in scan.unsettled] == ["scripts/welcome.wav"]


def test_output_names_stay_unique() -> None:
    names = output_names([("a__b", "c"), ("a", "b__c"), ("x", "y")])
    assert names[("x", "y")] == "x__y.mp4"
    assert len(set(names.values())) == 3


# --------------------------------------------------------------------------------------------- pair states


def prepared_bucket(bucket: Bucket) -> tuple[FactoryState, str]:
    """A bucket whose one script and one avatar are prepared (stamps), no render yet."""
    put(bucket, "scripts/welcome.wav")
    put(bucket, "avatars/anna.mp4")
    scan = scan_bucket(bucket)
    s_tok = script_token(scan.scripts["welcome"].entry, EspeakChoice())
    a_tok = avatar_token(scan.avatars["anna"].entry, MEDIA)
    bucket.write_json(script_stamp_path(bucket, "welcome"), stamp(s_tok, source="welcome.wav"))
    bucket.write_json(avatar_stamp_path(bucket, "anna"), stamp(a_tok, source="anna.mp4"))
    bucket.write_json(track_stamp_path(bucket, "anna"), stamp(track_token(a_tok)))
    return FactoryState(bucket, scan, MEDIA, DEFAULTS), render_inputs_token(s_tok, track_token(a_tok))


def fake_render(bucket: Bucket, inputs_token: str, passed: bool | None, code_version: str | None = None) -> str:
    variant = DEFAULTS.variant
    bucket.write_bytes(render_path(bucket, variant, "welcome", "anna"), b"\x00\x00\x00\x18ftypmp42fake video")
    render_id = uuid.uuid4().hex
    bucket.write_json(render_record_path(bucket, variant, "welcome", "anna"), {
        "inputs_token": inputs_token, "code_version": code_version or CODE_VERSIONS["render"],
        "render_id": render_id, "engine": "viseme", "frames": 50, "fps": 25.0, "width": 640, "height": 360,
        "duration_s": 2.0})
    if passed is not None:
        bucket.write_json(quality_record_path(bucket, variant, "welcome", "anna"), {
            "render_id": render_id, "passed": passed, "sync_offset_frames": 0 if passed else 3,
            "sync_confidence": 0.7, "summary": "" if passed else "av_sync_within_1_frame: offset +3 frames"})
    return render_id


def pair_status(bucket: Bucket) -> tuple[str, str]:
    state = FactoryState(bucket, scan_bucket(bucket), MEDIA, DEFAULTS)
    campaign = state.scan.campaigns[DEFAULT_CAMPAIGN]
    pair = state.pair(campaign, "welcome", "anna")
    return pair.status, pair.reason


def test_pair_status_follows_stamps_records_checks_and_errors(memory_bucket: Bucket) -> None:
    state, inputs = prepared_bucket(memory_bucket)
    assert pair_status(memory_bucket) == (MISSING, "not rendered yet")
    fake_render(memory_bucket, inputs, passed=None)
    assert pair_status(memory_bucket)[0] == UNCHECKED
    fake_render(memory_bucket, inputs, passed=True)
    assert pair_status(memory_bucket) == (OK, "")
    fake_render(memory_bucket, inputs, passed=False)
    assert pair_status(memory_bucket) == (CHECK_FAILED, "av_sync_within_1_frame: offset +3 frames")
    fake_render(memory_bucket, inputs, passed=True, code_version="0")
    assert pair_status(memory_bucket) == (STALE, "render code version changed")
    fake_render(memory_bucket, "old-inputs", passed=True)
    assert pair_status(memory_bucket) == (STALE, "inputs changed")
    # An edited upload makes the script stage stale; a recorded final failure of it fails the pair.
    time.sleep(0.01)
    put(memory_bucket, "scripts/welcome.wav", b"y" * 20)
    state = FactoryState(memory_bucket, scan_bucket(memory_bucket), MEDIA, DEFAULTS)
    assert not state.script_ready("welcome")
    write_error(memory_bucket, "script", "welcome", state.script_token("welcome"),
                "scripts/welcome.wav: not a readable audio file; upload it again", final=True)
    status, reason = pair_status(memory_bucket)
    assert status == FAILED and "not a readable audio file" in reason


def test_plan_work_stages_and_retry_policy(memory_bucket: Bucket) -> None:
    put(memory_bucket, "scripts/welcome.wav")
    put(memory_bucket, "avatars/anna.mp4")
    state = FactoryState(memory_bucket, scan_bucket(memory_bucket), MEDIA, DEFAULTS)
    work = plan_work(state, state.scan.campaigns.values(), retry_failed=False)
    assert (work.scripts, work.avatars) == (["welcome"], ["anna"])
    assert [(p.script, p.avatar, p.inputs_ready) for p in work.renders] == [("welcome", "anna", False)]
    assert not work.settled(DEFAULT_CAMPAIGN)
    # A final failure of the avatar: the sensor leaves it (and its pairs) alone, the CLI tries again.
    write_error(memory_bucket, "face_track", "anna", track_token(state.avatar_token("anna")), "no face", True)
    state = FactoryState(memory_bucket, scan_bucket(memory_bucket), MEDIA, DEFAULTS)
    lazy = plan_work(state, state.scan.campaigns.values(), retry_failed=False)
    assert lazy.avatars == [] and lazy.renders == [] and not lazy.settled(DEFAULT_CAMPAIGN)  # script still due
    eager = plan_work(state, state.scan.campaigns.values(), retry_failed=True)
    assert eager.avatars == ["anna"] and len(eager.renders) == 1


# ------------------------------------------------------------------------------------------- deliverables


def caption_script(bucket: Bucket, script: str, text: str) -> None:
    """Captions for a prepared script, as intake writes them: captions.json and the summary in script.json."""
    words = [Word(word, 0.2 + 0.4 * i, 0.5 + 0.4 * i) for i, word in enumerate(text.split())]
    track = CaptionTrack(build_cues(words, 3.0), words, "pocketsphinx", "en", "script text", 3.0)
    folder = script_dir(bucket, script)
    track.save(bucket.local_path(f"{folder}/captions.json"))
    bucket.write_json(f"{folder}/script.json", {"captions": track.summary()})


def test_manifest_and_zip(tmp_path) -> None:
    bucket = Bucket(str(tmp_path / "bucket"))
    state, inputs = prepared_bucket(bucket)
    put(bucket, "avatars/bob.png")  # bob is never prepared: his pair is missing
    fake_render(bucket, inputs, passed=True)
    caption_script(bucket, "welcome", "Welcome to the launch")
    state = FactoryState(bucket, scan_bucket(bucket), MEDIA, DEFAULTS)
    delivered = write_manifest(bucket, state, state.scan.campaigns[DEFAULT_CAMPAIGN])
    assert delivered.videos == ["outputs/default/welcome__anna.mp4"]
    frame = pd.read_csv(io.BytesIO(bucket.read_bytes("outputs/default/manifest.csv")))
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    rows = {row["avatar"]: row for row in frame.to_dict(orient="records")}
    assert rows["anna.mp4"]["status"] == OK and rows["anna.mp4"]["output"] == "welcome__anna.mp4"
    assert rows["anna.mp4"]["frames"] == 50 and bool(rows["anna.mp4"]["checks_passed"])
    assert rows["anna.mp4"]["subtitles"] == "srt+vtt" and rows["anna.mp4"]["captions_timing"] == "pocketsphinx"
    assert rows["bob.png"]["status"] == MISSING and pd.isna(rows["bob.png"]["output"])
    srt = bucket.read_bytes("outputs/default/welcome__anna.srt").decode()
    assert srt.startswith("1\n00:00:00,200 --> ") and "Welcome to the launch" in srt
    assert bucket.read_bytes("outputs/default/welcome__anna.vtt").decode().startswith("WEBVTT")
    parquet = pd.read_parquet(io.BytesIO(bucket.read_bytes("outputs/default/manifest.parquet")))
    assert tuple(parquet.columns) == MANIFEST_COLUMNS and str(parquet["frames"].dtype) == "Int64"
    zip_rel, _ = write_zip(bucket, "default")
    assert zip_rel == "outputs/default/default.zip"
    with zipfile.ZipFile(tmp_path / "bucket" / zip_rel) as archive:
        assert sorted(archive.namelist()) == ["manifest.csv", "welcome__anna.mp4", "welcome__anna.srt",
                                              "welcome__anna.vtt"]
        assert archive.getinfo("welcome__anna.mp4").compress_type == zipfile.ZIP_STORED
    assert os.stat(tmp_path / "bucket/outputs/default/welcome__anna.mp4").st_mode & 0o044  # readable by others
    # A pair no longer delivered takes its subtitles with it.
    bucket.remove(render_record_path(bucket, DEFAULTS.variant, "welcome", "anna"))
    write_manifest(bucket, FactoryState(bucket, scan_bucket(bucket), MEDIA, DEFAULTS),
                   state.scan.campaigns[DEFAULT_CAMPAIGN])
    assert not [e.name for e in bucket.list_files("outputs/default") if e.name.startswith("welcome__anna")]


def test_campaign_checkpoint_selects_the_wav2lip_weights() -> None:
    text = "scripts: ['*']\navatars: ['*']\nengine: wav2lip\ncheckpoint: ~/weights/wav2lip_gan.pth\n"
    campaign = parse_campaign(text, "launch.yaml")
    defaults = RenderOptions()
    options = campaign.render_options(defaults)
    assert options.engine == "wav2lip" and options.checkpoint is not None
    assert options.checkpoint.endswith("weights/wav2lip_gan.pth") and not options.checkpoint.startswith("~")
    assert options.as_config()["checkpoint"] == options.checkpoint
    # Other weights render other videos: the variant (output folder) differs.
    plain = RenderOptions(engine="wav2lip")
    assert options.variant != plain.variant and "checkpoint" not in plain.as_config()
    with pytest.raises(CampaignError, match=r"launch\.yaml"):
        parse_campaign("engine: wav2lip\ncheckpoint: [1, 2]\n", "launch.yaml")


def test_subtitles_option_burns_into_another_variant() -> None:
    burn = parse_campaign("subtitles: {mode: burn, size: 7, position: top}\n", "launch.yaml")
    options = burn.render_options(RenderOptions())
    assert options.subtitles.burn and options.subtitles.style.size == 7
    assert options.variant != RenderOptions().variant  # captions in the picture: other videos
    assert SubtitleOptions.model_validate(options.as_config()["subtitles"]) == options.subtitles
    sidecar = parse_campaign("subtitles: sidecar\n", "launch.yaml").render_options(RenderOptions())
    assert sidecar.variant == RenderOptions().variant and "subtitles" not in sidecar.as_config()


def test_a_bad_subtitles_option_skips_the_campaign_file_with_its_reason(memory_bucket: Bucket) -> None:
    put(memory_bucket, "campaigns/launch.yaml", b"subtitles: {mode: burn, size: 40}\n")
    (skip,) = scan_bucket(memory_bucket).skipped
    assert skip.rel == "campaigns/launch.yaml" and "subtitles.size" in skip.reason


def test_a_transcript_belongs_to_its_script_and_is_part_of_its_input_version(memory_bucket: Bucket) -> None:
    put(memory_bucket, "scripts/Welcome Talk.mp3")
    bare = scan_bucket(memory_bucket)
    (script,) = bare.scripts
    put(memory_bucket, "transcripts/Welcome Talk.txt", b"Welcome, everyone.")
    put(memory_bucket, "transcripts/notes.md", b"not a transcript")
    scan = scan_bucket(memory_bucket)
    assert scan.transcript(script).rel == "transcripts/Welcome Talk.txt"
    assert "transcripts/notes.md" in [s.rel for s in scan.skipped]
    with_text = FactoryState(memory_bucket, scan, MEDIA, DEFAULTS).script_token(script)
    assert with_text != FactoryState(memory_bucket, bare, MEDIA, DEFAULTS).script_token(script)


def test_failures_before_a_request_are_planned_again(memory_bucket: Bucket) -> None:
    put(memory_bucket, "scripts/welcome.wav")
    put(memory_bucket, "avatars/anna.mp4")
    state = FactoryState(memory_bucket, scan_bucket(memory_bucket), MEDIA, DEFAULTS)
    write_error(memory_bucket, "script", "welcome", state.script_token("welcome"), "unreadable", final=True)
    before = FactoryState(memory_bucket, scan_bucket(memory_bucket), MEDIA, DEFAULTS)
    assert plan_work(before, before.scan.campaigns.values(), retry_failed=False).scripts == []
    after = FactoryState(memory_bucket, scan_bucket(memory_bucket), MEDIA, DEFAULTS, failures_since=time.time() + 1)
    assert plan_work(after, after.scan.campaigns.values(), retry_failed=False).scripts == ["welcome"]
