"""What ``heygem run`` reports: every pair of the chosen campaigns as the bucket has it now (the manifest tells
the same story), the deliverables, and the Dagster runs that were followed."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import TextIO

from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import Campaign, MediaOptions, RenderOptions
from heygem_pipeline.factory.deliver import deliverables_digest, output_names
from heygem_pipeline.factory.layout import (
    campaign_record_path,
    manifest_csv_path,
    manifest_parquet_path,
    outputs_dir,
    zip_path,
)
from heygem_pipeline.factory.plan import ItemKey
from heygem_pipeline.factory.records import CampaignRecord
from heygem_pipeline.factory.state import DELIVERABLE_STATUSES, OK, FactoryState, PairState
from heygem_pipeline.factory.uploads import Skipped, scan_bucket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    item: str  # what the run did (heygem/item tag)
    job: str
    run_id: str  # the last run followed (a retry's, when Dagster retried it)
    state: str  # succeeded, failed, blocked, or submitted (still going when the client stopped)
    errors: tuple[str, ...] = ()

    @property
    def success(self) -> bool:
        return self.state == "succeeded"


@dataclass(frozen=True)
class PairOutcome:
    campaign: str
    script: str  # original file names
    avatar: str
    status: str
    output: str  # the delivered video's address, when there is one
    error: str
    duration_s: float | None = None
    sync_offset_frames: int | None = None
    checks_passed: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class CampaignOutcome:
    campaign: str
    folder: str
    manifest_csv: str
    manifest_parquet: str
    zip: str
    built: bool  # the deliverables describe the pairs as they are now


@dataclass
class FactoryReport:
    bucket: str
    dagster_home: str
    campaigns: list[CampaignOutcome] = field(default_factory=list)
    pairs: list[PairOutcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    runs: list[RunOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[PairOutcome]:
        return [pair for pair in self.pairs if not pair.ok]

    @property
    def ok(self) -> bool:
        return not self.failures and all(c.built for c in self.campaigns)

    def summary_table(self) -> str:
        header = ("campaign", "script", "avatar", "status", "seconds", "sync", "checks")
        rows = [header]
        for p in self.pairs:
            rows.append((p.campaign, p.script, p.avatar, p.status,
                         "" if p.duration_s is None else f"{p.duration_s:.1f}",
                         "" if p.sync_offset_frames is None else f"{p.sync_offset_frames:+d}",
                         {True: "passed", False: "FAILED", None: "-"}[p.checks_passed]))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def failure_lines(self) -> list[str]:
        lines = [f"{p.campaign}: {p.script} × {p.avatar}: {p.status}: {p.error or 'no reason recorded'}"
                 for p in self.failures]
        for campaign in self.campaigns:
            if not campaign.built:
                errors = [e for r in self.runs if r.item == f"campaign:{campaign.campaign}" for e in r.errors]
                lines.append(f"{campaign.campaign}: deliverables not built: "
                             f"{'; '.join(errors) or 'they do not describe the pairs as they are now'}")
        return lines


def build_report(store: Bucket, selected: list[Campaign], media: MediaOptions, defaults: RenderOptions,
                 home: str, runs: list[RunOutcome], skipped: list[Skipped]) -> FactoryReport:
    """The report from the bucket's final state (read again: other clients and retries may have changed it)."""
    report = FactoryReport(bucket=store.url, dagster_home=home, skipped=list(skipped), runs=runs)
    state = FactoryState(store, scan_bucket(store, logger=log), media, defaults)
    run_errors = {(key.variant, key.script, key.avatar): "; ".join(r.errors) for r in runs
                  if r.errors and (key := ItemKey.parse(r.item)) is not None and key.pairs_stage}
    for campaign in selected:
        campaign = state.scan.campaigns.get(campaign.key, campaign)
        folder = outputs_dir(campaign.key)
        pairs = state.campaign_pairs(campaign)
        record = CampaignRecord.load(store.read_json(campaign_record_path(store, campaign.key)))
        built = record is not None and record.digest == deliverables_digest(campaign, pairs)
        report.campaigns.append(CampaignOutcome(
            campaign.key, store.uri(folder), store.uri(manifest_csv_path(campaign.key)),
            store.uri(manifest_parquet_path(campaign.key)), store.uri(zip_path(campaign.key)), built))
        names = output_names(state.scan.campaign_pairs(campaign))
        for pair in pairs:
            report.pairs.append(_pair_outcome(store, state, pair, names, run_errors))
    return report


def _pair_outcome(store: Bucket, state: FactoryState, pair: PairState, names: dict[tuple[str, str], str],
                  run_errors: dict[tuple[str, str, str], str]) -> PairOutcome:
    delivered = pair.status in DELIVERABLE_STATUSES
    record, quality = pair.record, pair.quality
    delivered = delivered and record is not None
    name = names[(pair.upload_script, pair.avatar)]
    error = pair.reason if pair.status != OK else ""
    if pair.status != OK and not error:
        error = run_errors.get((pair.variant, pair.script, pair.avatar), "")
    return PairOutcome(
        campaign=pair.campaign, script=state.scan.scripts[pair.upload_script].name,
        avatar=state.scan.avatars[pair.avatar].name, status=pair.status,
        output=store.uri(f"{outputs_dir(pair.campaign)}/{name}") if delivered else "",
        error=error, duration_s=record.duration_s if delivered and record else None,
        sync_offset_frames=quality.sync_offset_frames if delivered and quality else None,
        checks_passed=quality.passed if delivered and quality else None)


def print_report(report: FactoryReport, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    print(report.summary_table(), file=stream)
    print(file=stream)
    for outcome in report.campaigns:
        print(f"campaign {outcome.campaign}: videos in {outcome.folder}", file=stream)
        print(f"  manifest {outcome.manifest_csv} (+ .parquet)", file=stream)
        print(f"  zip      {outcome.zip}", file=stream)
    for skip in report.skipped:
        print(f"skipped {skip.rel}: {skip.reason}", file=stream)
    if report.failures or not report.ok:
        print(f"\n{len(report.failure_lines())} failure(s):", file=stream)
        for line in report.failure_lines():
            print(f"  {line}", file=stream)
    print(f"\n{len(report.pairs)} pairs, {len(report.failures)} not ok, {report.seconds:.1f} s; "
          f"runs are in the Dagster UI (DAGSTER_HOME={report.dagster_home})", file=stream)
