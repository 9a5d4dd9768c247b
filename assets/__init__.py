"""Dagster adapters of the factory: assets, checks, jobs, sensor and schedule, one module each.

Each asset reads its inputs from the bucket, calls one engine stage (``heygem_pipeline.engine.stages``), writes its
outputs back through the bucket and returns metadata. Media never travels through an IO manager.
"""
