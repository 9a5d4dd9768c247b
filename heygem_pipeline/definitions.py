"""The Dagster code location (``workspace.yaml`` loads it): assembles assets, checks, jobs, sensor, schedule and
resources. Nothing is defined here; each piece lives in its module under ``assets/`` and ``resources/``."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from assets.avatars import avatar_video, face_track
from assets.campaigns import campaign_manifest, campaign_zip
from assets.checks import lipsync_quality_checks
from assets.jobs import JOBS
from assets.requests import make_request_sensor, request_job
from assets.schedules import make_nightly_schedule
from assets.scripts import script_intake
from assets.sensors import make_bucket_sensor
from assets.videos import lipsync_video
from heygem_pipeline.settings import Settings
from resources import build_resources

# The environment is read and validated here, once per code location load: a bad HEYGEM_* value stops the load with
# one SettingsError line naming the variable (the UI shows it as the location's load error).
settings = Settings.from_env()

defs = Definitions(
    assets=[script_intake, avatar_video, face_track, lipsync_video, campaign_manifest, campaign_zip],
    asset_checks=[lipsync_quality_checks],
    jobs=[*JOBS, request_job],
    sensors=[make_bucket_sensor(settings), make_request_sensor(settings)],
    schedules=[make_nightly_schedule(settings)],
    resources=build_resources(settings),
    # Runs are small (one partition each): stepping in the run's own process keeps the engine loaded across its
    # steps and spares a 2-core machine a Python start-up per step.
    executor=in_process_executor,
)
