"""Submit and query through Dagster's GraphQL API, which the webserver of ``heygem ui`` serves: HeyGem's
``/easy/submit`` and ``/easy/query``, on the factory.

``submit`` launches a run of ``request_job`` (dagster-graphql's client) for a campaign, or one pair of it: its run id
is the request's id. The ``request_sensor`` then runs the stages (see ``assets/requests.py``). ``status`` reads back,
over GraphQL only, the request's plan, the runs it started and, once delivered, the campaign's manifest: where every
pair stands and where its video and subtitles are.

    from heygem_pipeline.api import FactoryClient
    client = FactoryClient("http://127.0.0.1:3000")
    request = client.submit(campaign="launch")
    status = client.wait(request)           # or poll client.status(request)
    for pair in status.pairs: print(pair.script, pair.avatar, pair.state, pair.output)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from assets.names import ITEM_TAG, REQUEST_JOB, REQUEST_TAG, TRIGGER_TAG
from heygem_pipeline.errors import HeygemError
from heygem_pipeline.factory.layout import manifest_csv_path, zip_path
from heygem_pipeline.factory.plan import ItemKey, Stage
from heygem_pipeline.factory.state import DELIVERABLE_STATUSES


class ApiError(HeygemError):
    """The webserver could not be reached, or refused the request (the message says why)."""


class PairProgressState(Enum):
    WAITING = "waiting"  # its stages have not started
    PREPARING = "preparing"  # its script or avatar is being prepared
    QUEUED = "queued"  # its render waits for the GPU worker
    RENDERING = "rendering"
    CHECKING = "checking"
    RENDERED = "rendered"  # rendered and checked; delivered with the campaign's deliverables
    UP_TO_DATE = "up to date"  # nothing to do: rendered and checked before the request
    FAILED = "failed"
    CANCELED = "canceled"  # one of its runs was terminated (Cancel, or Terminate in the Dagster UI)

    @property
    def settled(self) -> bool:
        return self in (PairProgressState.RENDERED, PairProgressState.UP_TO_DATE, PairProgressState.FAILED,
                        PairProgressState.CANCELED)


class RequestState(Enum):
    PLANNING = "planning"  # request_job is queued or running
    RUNNING = "running"
    DONE = "done"  # delivered: outputs/<campaign>/ holds the videos, subtitles, manifest and zip
    FAILED = "failed"  # the request itself could not be planned (an unknown campaign, script or avatar)
    CANCELED = "canceled"  # its runs were terminated: the request_sensor no longer drives it


@dataclass
class PairProgress:
    script: str
    avatar: str
    state: PairProgressState
    output: str = ""  # the delivered video (once the request is done and the pair was delivered)
    subtitles: list[str] = field(default_factory=list)  # its .srt and .vtt, when its script has captions
    error: str = ""
    seconds: float | None = None  # from its first run's start to its last run's end (or now)
    video: str = ""  # the rendered video as soon as it exists (before delivery: under work/renders/)
    sync_offset_frames: int | None = None  # the sync check's measured lag, once delivered


@dataclass
class RequestStatus:
    request_id: str
    state: RequestState
    campaign: str = ""
    folder: str = ""  # outputs/<campaign>/
    pairs: list[PairProgress] = field(default_factory=list)
    error: str = ""
    created: float = 0.0  # when the request was submitted (epoch seconds)
    zip: str = ""  # outputs/<campaign>/<campaign>.zip and its manifest, once delivered
    manifest: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (RequestState.DONE, RequestState.FAILED, RequestState.CANCELED)

    @property
    def settled(self) -> int:
        return sum(p.state.settled for p in self.pairs)

    def progress(self) -> str:
        return f"{self.settled}/{len(self.pairs)} pairs"


@dataclass(frozen=True)
class RequestSummary:
    """One past request, as the instance recorded it (``FactoryClient.requests``)."""

    request_id: str
    created: float
    run_status: str  # the request_job run's Dagster status
    campaign: str  # as asked for ('' for the bucket's only or default campaign)
    script: str = ""
    avatar: str = ""


_RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status creationTime }
    ... on PythonError { message }
  }
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { error { message } failureMetadata { description } }
        ... on ExecutionStepOutputEvent { metadataEntries { label ... on JsonMetadataEntry { jsonString } } }
        ... on MaterializationEvent {
          assetKey { path }
          metadataEntries { label ... on TableMetadataEntry { table { records } } ... on PathMetadataEntry { path } }
        }
      }
    }
  }
}
"""

_RUNS = """
query Runs($tag: String!) {
  runsOrError(filter: {tags: [{key: "REQUEST_TAG", value: $tag}]}) {
    __typename
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
""".replace("REQUEST_TAG", REQUEST_TAG)

_REQUESTS = """
query Requests($limit: Int) {
  runsOrError(filter: {pipelineName: "REQUEST_JOB"}, limit: $limit) {
    __typename
    ... on Runs { results { runId status creationTime runConfigYaml } }
    ... on PythonError { message }
  }
}
""".replace("REQUEST_JOB", REQUEST_JOB)

_TERMINATE = """
mutation Terminate($runIds: [String!]!) {
  terminateRuns(runIds: $runIds) { __typename ... on PythonError { message } }
}
"""

ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "MANAGED"}
RUNNING = {"STARTED", "CANCELING"}
FAILED = {"FAILURE", "CANCELED"}


class FactoryClient:
    """A client of the factory's Dagster webserver at ``url`` (``heygem ui``: http://127.0.0.1:3000)."""

    def __init__(self, url: str = "http://127.0.0.1:3000", timeout: int = 60) -> None:
        from dagster_graphql import DagsterGraphQLClient
        from gql import Client
        from gql.transport.requests import RequestsHTTPTransport

        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._dagster = DagsterGraphQLClient(parts.hostname or "127.0.0.1", port_number=parts.port,
                                             use_https=parts.scheme == "https", timeout=timeout,
                                             path_prefix=parts.path.rstrip("/"))
        self._gql = Client(transport=RequestsHTTPTransport(url=f"{self.url}/graphql", timeout=timeout))
        self._errors: dict[str, str] = {}  # by run id: what failed and finished runs said
        self._paths: dict[str, str] = {}
        self.queries = 0  # GraphQL queries sent so far (the studio's benchmark counts them)
        self._lock = threading.Lock()  # gql's synchronous client holds one session: one query at a time

    def _query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        from gql import GraphQLRequest

        self.queries += 1
        try:
            with self._lock:
                return self._gql.execute(GraphQLRequest(query, variable_values=variables))
        except Exception as error:  # connection refused, HTTP errors, GraphQL errors: one line for the user
            raise ApiError(f"{self.url}: {type(error).__name__}: {error}") from error

    def submit(self, campaign: str | None = None, script: str | None = None, avatar: str | None = None,
               bucket: str | None = None) -> str:
        """Ask for ``campaign`` (or only the pair ``script`` × ``avatar`` of it) to be brought up to date and
        delivered; returns the request's id. ``bucket``: default, the one the UI's factory uses."""
        from dagster_graphql import DagsterGraphQLClientError

        if (script is None) != (avatar is None):
            raise ApiError("give both a script and an avatar for one pair, or neither for the whole campaign")
        config = {key: value for key, value in (("campaign", campaign), ("script", script), ("avatar", avatar))
                  if value}
        run_config: dict[str, Any] = {"ops": {"campaign_request": {"config": config}}}
        if bucket:
            run_config["resources"] = {"bucket": {"config": {"url": bucket}}}
        try:
            return self._dagster.submit_job_execution(REQUEST_JOB, run_config=run_config,
                                                      tags={TRIGGER_TAG: "api"})
        except DagsterGraphQLClientError as error:
            raise ApiError(f"{self.url}: the request was refused: {error}") from error
        except Exception as error:
            raise ApiError(f"{self.url}: {type(error).__name__}: {error}") from error

    def status(self, request_id: str) -> RequestStatus:
        """Where request ``request_id`` stands: its state, and every pair's stage and outputs."""
        request = self._query(_RUN, {"runId": request_id})
        run = request["runOrError"]
        if run["__typename"] != "Run":
            raise ApiError(f"no request {request_id!r} at {self.url} ({run.get('message', run['__typename'])})")
        events = request["logsForRun"].get("events") or []
        created = float(run.get("creationTime") or 0.0)
        if run["status"] in FAILED:
            errors = _step_errors(events)
            state = RequestState.CANCELED if run["status"] == "CANCELED" else RequestState.FAILED
            return RequestStatus(request_id, state, error="; ".join(errors) or run["status"], created=created)
        plan = _metadata_json(events, "plan")
        if run["status"] != "SUCCESS" or plan is None:
            return RequestStatus(request_id, RequestState.PLANNING, created=created)
        runs = self._query(_RUNS, {"tag": request_id})["runsOrError"]
        if runs["__typename"] != "Runs":
            raise ApiError(f"{self.url}: {runs.get('message', runs['__typename'])}")
        items: dict[ItemKey, list[dict]] = {}
        for found in runs["results"]:
            tags = {t["key"]: t["value"] for t in found["tags"]}
            if (key := ItemKey.parse(tags.get(ITEM_TAG, ""))) is not None:
                items.setdefault(key, []).append(found)
        deliverables = next(iter(items.get(ItemKey(Stage.CAMPAIGN, plan["campaign"]), [])), None)
        manifest = self._manifest(deliverables["runId"]) if deliverables and deliverables["status"] == "SUCCESS" else {}
        finished = deliverables is not None and deliverables["status"] not in ACTIVE | RUNNING
        pairs = [_pair_progress(pair, items, manifest, finished) for pair in plan["pairs"]]
        for progress, pair in zip(pairs, plan["pairs"], strict=True):
            if progress.state == PairProgressState.FAILED and not progress.error:
                failed = [r for r in _pair_runs(pair, items) if r["status"] == "FAILURE"]
                progress.error = self._run_error(failed[0]["runId"]) if failed else ""
            if progress.state in (PairProgressState.CHECKING, PairProgressState.RENDERED, PairProgressState.UP_TO_DATE):
                rendered = [r for r in _runs(items, pair, Stage.RENDER) if r["status"] == "SUCCESS"]
                progress.video = progress.output or (self._render_path(rendered[0]["runId"]) if rendered else "")
        status = RequestStatus(request_id, RequestState.RUNNING, plan["campaign"], plan["folder"], pairs,
                               created=created)
        mine = [r for found in items.values() for r in found]
        if deliverables is not None and deliverables["status"] == "SUCCESS":
            status.state = RequestState.DONE
            # The plan's folder is where the bucket is (a path or URL); the names inside it are the layout's.
            status.zip = f"{plan['folder']}/{PurePosixPath(zip_path(plan['campaign'])).name}"
            status.manifest = f"{plan['folder']}/{PurePosixPath(manifest_csv_path(plan['campaign'])).name}"
        elif any(r["status"] == "CANCELED" for r in mine) and not any(r["status"] in ACTIVE | RUNNING for r in mine):
            status.state = RequestState.CANCELED
        return status

    def requests(self, limit: int = 50) -> list[RequestSummary]:
        """The latest ``limit`` requests, newest first, as the instance recorded them."""
        import yaml

        found = self._query(_REQUESTS, {"limit": limit})["runsOrError"]
        if found["__typename"] != "Runs":
            raise ApiError(f"{self.url}: {found.get('message', found['__typename'])}")
        summaries = []
        for run in found["results"]:
            config = (((yaml.safe_load(run["runConfigYaml"]) or {}).get("ops") or {}).get("campaign_request")
                      or {}).get("config") or {}
            summaries.append(RequestSummary(run["runId"], float(run["creationTime"]), run["status"],
                                            str(config.get("campaign") or ""), str(config.get("script") or ""),
                                            str(config.get("avatar") or "")))
        return summaries

    def cancel(self, request_id: str, settle_seconds: float = 0.0) -> int:
        """Terminate every run of the request still queued or running; returns how many. The request_sensor
        stops driving a request that has a terminated run; ``settle_seconds``: keep terminating for that long, for
        a run the sensor created while this call ran."""
        deadline = time.monotonic() + settle_seconds
        terminated: set[str] = set()
        while True:
            runs = self._query(_RUNS, {"tag": request_id})["runsOrError"]
            if runs["__typename"] != "Runs":
                raise ApiError(f"{self.url}: {runs.get('message', runs['__typename'])}")
            active = [r["runId"] for r in runs["results"]
                      if r["status"] in ACTIVE | {"STARTED"} and r["runId"] not in terminated]
            if active:
                result = self._query(_TERMINATE, {"runIds": active})["terminateRuns"]
                if result["__typename"] == "PythonError":
                    raise ApiError(f"{self.url}: could not cancel: {result['message']}")
                terminated.update(active)
            if time.monotonic() >= deadline:
                return len(terminated)
            time.sleep(1.0)

    def wait(self, request_id: str, timeout: float = 3600.0, poll_seconds: float = 2.0) -> RequestStatus:
        """Poll until the request is done or failed (``ApiError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not (status := self.status(request_id)).finished:
            if time.monotonic() > deadline:
                raise ApiError(f"request {request_id} not finished after {timeout:.0f} s ({status.progress()})")
            time.sleep(poll_seconds)
        return status

    def _run_error(self, run_id: str) -> str:
        """The first step failure's message of a failed run (kept: a failed run never changes)."""
        if run_id not in self._errors:
            events = self._query(_RUN, {"runId": run_id})["logsForRun"].get("events") or []
            errors = _step_errors(events)
            self._errors[run_id] = next(iter(errors[0].strip().splitlines()), "") if errors else ""
        return self._errors[run_id]

    def _render_path(self, run_id: str) -> str:
        """The video a succeeded render run wrote (its materialization's ``path``; kept, as the run is final)."""
        if run_id not in self._paths:
            events = self._query(_RUN, {"runId": run_id})["logsForRun"].get("events") or []
            self._paths[run_id] = next((entry["path"] for event in events if event["__typename"] ==
                                        "MaterializationEvent" for entry in event["metadataEntries"]
                                        if entry["label"] == "path" and "path" in entry), "")
        return self._paths[run_id]

    def _manifest(self, run_id: str) -> dict[tuple[str, str], dict]:
        events = self._query(_RUN, {"runId": run_id})["logsForRun"].get("events") or []
        for event in events:
            if event["__typename"] == "MaterializationEvent" and event["assetKey"]["path"] == ["campaign_manifest"]:
                for entry in event["metadataEntries"]:
                    if entry["label"] == "manifest":
                        rows = [json.loads(r) for r in entry["table"]["records"]]
                        return {(r["script"], r["avatar"]): r for r in rows}
        return {}


def _step_errors(events: list[dict]) -> list[str]:
    """What each failed step of a run said, in order."""
    return [e["failureMetadata"]["description"] if e.get("failureMetadata") else e["error"]["message"]
            for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


def _metadata_json(events: list[dict], label: str) -> dict | None:
    for event in events:
        for entry in event.get("metadataEntries") or []:
            if entry.get("label") == label and "jsonString" in entry:
                return json.loads(entry["jsonString"])
    return None


def _runs(items: dict[ItemKey, list[dict]], pair: dict, *stages: Stage) -> list[dict]:
    """The request's runs of ``stages`` that pair ``pair`` depends on (its intake, render or checks)."""
    script, avatar = pair["script_id"], pair["avatar_id"]
    return [r for key, found in items.items() if key.stage in stages and key.mentions(script, avatar) for r in found]


def _pair_runs(pair: dict, items: dict[ItemKey, list[dict]]) -> list[dict]:
    """The runs of the request that a pair depends on: its script's and avatar's intake, its render and checks."""
    return _runs(items, pair, Stage.SCRIPT, Stage.AVATAR, Stage.RENDER, Stage.CHECKS)


def _pair_progress(pair: dict, items: dict[ItemKey, list[dict]], manifest: dict[tuple[str, str], dict],
                   finished: bool) -> PairProgress:
    intake = _runs(items, pair, Stage.SCRIPT, Stage.AVATAR)
    render = _runs(items, pair, Stage.RENDER)
    checks = _runs(items, pair, Stage.CHECKS)
    progress = PairProgress(pair["script"], pair["avatar"], PairProgressState.WAITING)
    mine = render + checks
    starts = [r["startTime"] for r in mine if r.get("startTime")]
    if starts:
        ends = [r.get("endTime") or time.time() for r in mine if r.get("startTime")]
        progress.seconds = max(ends) - min(starts)
    statuses = {r["status"] for r in intake + render + checks}
    if "FAILURE" in statuses:
        progress.state = PairProgressState.FAILED
    elif "CANCELED" in statuses:
        progress.state = PairProgressState.CANCELED
    elif any(r["status"] == "SUCCESS" for r in checks):
        progress.state = PairProgressState.RENDERED
    elif any(r["status"] in RUNNING for r in checks):
        progress.state = PairProgressState.CHECKING
    elif any(r["status"] in RUNNING for r in render):
        progress.state = PairProgressState.RENDERING
    elif render:
        rendered = any(r["status"] == "SUCCESS" for r in render)
        progress.state = PairProgressState.CHECKING if rendered else PairProgressState.QUEUED
    elif intake:
        progress.state = PairProgressState.PREPARING
    elif finished:
        progress.state = PairProgressState.UP_TO_DATE
    row = manifest.get((pair["script"], pair["avatar"]), {})  # the manifest's preview holds the first 50 pairs
    if row.get("status") == "failed":
        progress.state, progress.error = PairProgressState.FAILED, str(row.get("error") or "")
    elif (row.get("status") in DELIVERABLE_STATUSES
          and progress.state not in (PairProgressState.FAILED, PairProgressState.CANCELED)):
        # Delivered; its checks may have run outside the request (the bucket sensor got there first).
        progress.state = PairProgressState.RENDERED if intake or render or checks else PairProgressState.UP_TO_DATE
    if manifest and progress.state in (PairProgressState.RENDERED, PairProgressState.UP_TO_DATE):
        progress.output = pair["output"]
        if row.get("sync_offset_frames") not in (None, ""):  # "": delivered without a measured offset
            progress.sync_offset_frames = int(row["sync_offset_frames"])
        if str(row.get("subtitles", "")).startswith("srt"):
            stem = progress.output.rsplit(".", 1)[0]
            progress.subtitles = [f"{stem}.srt", f"{stem}.vtt"]
    return progress
