"""What the selected campaigns still need, stage by stage (``plan_work``), and the runs that do it
(``plan_items``): `heygem run`, the bucket and request sensors and the nightly schedule all plan with this."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from heygem_pipeline.factory.campaigns import Campaign, RenderOptions
from heygem_pipeline.factory.state import CHECK_FAILED, FAILED, MISSING, OK, STALE, UNCHECKED, FactoryState, PairState
from heygem_pipeline.factory.voicing import upload_key

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
            if state.status not in SETTLED_STATUSES and not state.check_failed_to_run:
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
            elif pair.status == UNCHECKED and (retry_failed or not pair.check_failed_to_run):
                checks.setdefault(key, pair)
    work.scripts, work.avatars = sorted(scripts), sorted(avatars)
    work.renders = [renders[k] for k in sorted(renders)]
    work.checks = [checks[k] for k in sorted(checks)]
    return work


# ------------------------------------------------------------------------------------------------ work items


class Stage(str, Enum):
    """A kind of run; the value starts the item key (the ``heygem/item`` tag)."""

    SCRIPT = "script"
    AVATAR = "avatar"
    RENDER = "render"
    CHECKS = "checks"
    CAMPAIGN = "campaign"


PAIR_STAGES = (Stage.RENDER, Stage.CHECKS)


@dataclass(frozen=True)
class ItemKey:
    """What a run does, as its ``heygem/item`` tag says it: ``script:<id>``, ``avatar:<id>``, ``campaign:<id>``,
    or ``render:<variant>:<script>|<avatar>`` and ``checks:…`` for a pair (script first, unlike Dagster's keys)."""

    stage: Stage
    name: str = ""  # the script, avatar or campaign id
    variant: str = ""
    script: str = ""
    avatar: str = ""

    @classmethod
    def pair(cls, stage: Stage, variant: str, script: str, avatar: str) -> ItemKey:
        return cls(stage, variant=variant, script=script, avatar=avatar)

    def __str__(self) -> str:
        if self.stage in PAIR_STAGES:
            return f"{self.stage.value}:{self.variant}:{self.script}|{self.avatar}"
        return f"{self.stage.value}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> ItemKey | None:
        """The key a tag holds; None for text that is not an item key."""
        stage_text, _, rest = text.partition(":")
        try:
            stage = Stage(stage_text)
        except ValueError:
            return None
        if stage not in PAIR_STAGES:
            return cls(stage, name=rest) if rest else None
        variant, _, pair = rest.partition(":")
        script, bar, avatar = pair.partition("|")
        return cls.pair(stage, variant, script, avatar) if variant and bar else None

    @property
    def pairs_stage(self) -> bool:
        return self.stage in PAIR_STAGES

    def mentions(self, script: str, avatar: str) -> bool:
        """Whether this work is part of pair (script, avatar) (upload keys; a voiced copy of the script counts):
        its intake, render or checks."""
        if self.stage in PAIR_STAGES:
            return (upload_key(self.script), self.avatar) == (script, avatar)
        if self.stage is Stage.SCRIPT:
            return upload_key(self.name) == script
        return (self.stage, self.name) == (Stage.AVATAR, avatar)


@dataclass
class WorkItem:
    """One run's worth of work, the runs it waits for, and the inputs it is for."""

    key: ItemKey
    token: str  # the inputs it is for ("" for campaigns: known once their pairs are done)
    options: RenderOptions | None = None  # a render's
    deps: tuple[str, ...] = ()  # item keys (as text) of the runs it needs first
    inputs_ready: bool = True  # a render's script and avatar are prepared now
    render_id: str = ""  # checks: the render they measure

    @property
    def stage(self) -> Stage:
        return self.key.stage

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The pairs it finishes (renders and checks)."""
        return ((self.key.script, self.key.avatar),) if self.stage in PAIR_STAGES else ()

    @property
    def partition(self) -> str | tuple[str, str]:
        """The partition it runs for: an id, or (script, avatar) for a pair."""
        return self.pairs[0] if self.pairs else self.key.name

    @property
    def runnable_now(self) -> bool:
        """Nothing to wait for: the bucket sensor requests such items (later ones on a later tick)."""
        return not self.deps and self.inputs_ready


def plan_items(state: FactoryState, work: Work, campaigns: Iterable[Campaign] = ()) -> dict[str, WorkItem]:
    """The runs ``work`` needs, by item key, each with the items it waits for: intake in the order the renders need
    it (the run queue is first in, first out, so the first render can start while the rest is prepared), each render
    then its checks, the checks of renders not measured yet, and the deliverables of ``campaigns`` after everything
    of theirs. Every entry point (``heygem run``, the sensors, the schedule) plans with this."""
    items: dict[str, WorkItem] = {}
    wanted = [(stage, key) for pair in work.renders
              for stage, key in ((Stage.SCRIPT, pair.script), (Stage.AVATAR, pair.avatar))]
    wanted += [(Stage.SCRIPT, key) for key in work.scripts] + [(Stage.AVATAR, key) for key in work.avatars]
    for stage, name in dict.fromkeys(wanted):
        if name not in (work.scripts if stage is Stage.SCRIPT else work.avatars):
            continue
        token = state.script_token(name) if stage is Stage.SCRIPT else state.avatar_token(name)
        key = ItemKey(stage, name)
        items[str(key)] = WorkItem(key, token)
    for pair in work.renders:
        render = ItemKey.pair(Stage.RENDER, pair.variant, pair.script, pair.avatar)
        deps = tuple(d for d in (f"script:{pair.script}", f"avatar:{pair.avatar}") if d in items)
        items[str(render)] = WorkItem(render, pair.render_token, pair.options, deps, inputs_ready=pair.inputs_ready)
        checks = ItemKey.pair(Stage.CHECKS, pair.variant, pair.script, pair.avatar)
        items[str(checks)] = WorkItem(checks, pair.checks_token, deps=(str(render),))
    for pair in work.checks:
        checks = ItemKey.pair(Stage.CHECKS, pair.variant, pair.script, pair.avatar)
        items.setdefault(str(checks), WorkItem(checks, pair.checks_token,
                                               render_id=str(pair.record.render_id if pair.record else None)))
    stages = list(items.values())
    for campaign in campaigns:
        # Deliverables once everything else is finished: they describe every pair, failed ones too.
        mine = {(s.script, s.avatar) for s in work.states[campaign.key]}
        deps = tuple(str(i.key) for i in stages if not i.pairs or set(i.pairs) & mine)
        key = ItemKey(Stage.CAMPAIGN, campaign.key)
        items[str(key)] = WorkItem(key, "", deps=deps)
    return items
