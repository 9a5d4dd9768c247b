"""The bucket resource: where uploads come from and every output and intermediate goes (any fsspec URL)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from heygem_pipeline.factory.bucket import Bucket


class BucketResource(ConfigurableResource):
    """The factory's bucket. Runs started by the CLI, the sensor and the schedule pass ``url`` in their run config,
    so re-executing one from the UI reads the same bucket it did."""

    url: str = Field(default="data/bucket", description="fsspec URL: a local path, file://, memory://, s3://…")
    work_prefix: str = Field(default="work", description="Prefix for intermediates inside the bucket")

    def get(self) -> Bucket:
        return Bucket(self.url, work_prefix=self.work_prefix)
