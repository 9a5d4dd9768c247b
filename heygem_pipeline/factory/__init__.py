"""The bucket's bookkeeping over fsspec (no Dagster): uploads, campaigns, freshness, plans, deliverables.

The Dagster assets, the sensors, the schedule and the CLI decide "what exists, what is stale, what to deliver" with
these modules, and the tests exercise them without an instance.
"""
