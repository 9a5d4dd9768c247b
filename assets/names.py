"""Names Dagster stores with every run: job names and this project's tag keys. Run history, sensors' cursors and
clients find runs by them, so they never change (tests/test_persisted_names.py pins them)."""

SCRIPT_JOB, AVATAR_JOB, PAIR_JOB, CHECK_JOB, CAMPAIGN_JOB = "script_job", "avatar_job", "pair_job", "check_job", \
    "campaign_job"
REQUEST_JOB = "request_job"

ITEM_TAG = "heygem/item"  # the work a run does (an item key: factory.plan.ItemKey)
TOKEN_TAG = "heygem/token"  # a digest of the inputs it does it for
VARIANT_TAG = "heygem/variant"  # a render's or check's variant (engine and output options)
TRIGGER_TAG = "heygem/trigger"  # who asked: sensor, nightly, request, cli, api
REASON_TAG = "heygem/reason"  # why the nightly schedule renders a pair
REQUEST_TAG = "heygem/request"  # the API request (request_job run id) a run is part of
SESSION_TAG = "heygem/session"  # the `heygem run` command a run is part of
CAMPAIGN_TAG = "heygem/campaign"  # the campaign a `heygem run --campaign` asked for
