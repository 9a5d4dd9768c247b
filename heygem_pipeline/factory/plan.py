"""What the selected campaigns still need, stage by stage (the sensor, schedule and CLI share it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from heygem_pipeline.factory.campaigns import Campaign
from heygem_pipeline.factory.state import CHECK_FAILED, FAILED, MISSING, OK, STALE, UNCHECKED, FactoryState, PairState

SETTLED_STATUSES = (OK, CHECK_FAILED, FAILED)


@dataclass
class Work:
    """What the selected campaigns still need, stage by stage (the sensor, the schedule and the CLI all use it)."""

    scripts: list[str] = field(default_factory=list)  # to prepare (missing or stale stamp)
    avatars: list[str] = field(default_factory=list)
    renders: list[PairState] = field(default_factory=list)  # pairs to (re)render, one per variant × pair
    checks: list[PairState] = field(default_factory=list)  # rendered but never checked
    states: dict[str, list[PairState]] = field(default_factory=dict)  # every pair, by campaign
    campaigns: dict[str, Campaign] = field(default_factory=dict)

    def settled(self, campaign: str) -> bool:
        """No pair of the campaign is waiting for anything (each is delivered, failed, or checked-and-failed)."""
        pending_scripts, pending_avatars = set(self.scripts), set(self.avatars)
        for state in self.states[campaign]:
            if state.script in pending_scripts or state.avatar in pending_avatars:
                return False
            if state.status not in SETTLED_STATUSES and not (state.status == UNCHECKED and state.reason
                                                              != "not checked yet"):
                return False
        return True


def plan_work(state: FactoryState, campaigns: Iterable[Campaign], *, retry_failed: bool) -> Work:
    """The stage work the ``campaigns`` need now. Failures recorded for the current inputs are only tried
    again with ``retry_failed`` (the CLI and the nightly schedule; the sensor waits for the file to change)."""
    work = Work()
    scripts: set[str] = set()
    avatars: set[str] = set()
    renders: dict[tuple[str, str, str], PairState] = {}
    checks: dict[tuple[str, str, str], PairState] = {}
    for campaign in campaigns:
        work.campaigns[campaign.key] = campaign
        states = work.states[campaign.key] = state.campaign_pairs(campaign)
        for pair in states:
            if not state.script_ready(pair.script) and (retry_failed or not state.script_error(pair.script)):
                scripts.add(pair.script)
            if not state.avatar_ready(pair.avatar) and (retry_failed or not state.avatar_error(pair.avatar)):
                avatars.add(pair.avatar)
            key = (pair.variant, pair.script, pair.avatar)
            if pair.status in (MISSING, STALE) or (pair.status == FAILED and retry_failed):
                renders.setdefault(key, pair)
            elif pair.status == UNCHECKED and (retry_failed or pair.reason == "not checked yet"):
                checks.setdefault(key, pair)
    work.scripts, work.avatars = sorted(scripts), sorted(avatars)
    work.renders = [renders[k] for k in sorted(renders)]
    work.checks = [checks[k] for k in sorted(checks)]
    return work
