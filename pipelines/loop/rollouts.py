"""Rollouts: a challenger beside the champion on live traffic, promoted or stopped by a test.

* **shadow**: on a share of `/predict` requests the challenger answers too; its answers are
  logged (`shadow_predictions`) under the served prediction's id and never returned.
* **canary**: a share of requests is served by the challenger (sticky per client with an
  `X-Client-Id` header); its answers carry its `model_version`.

`start`, `stop` and `promote_now` are the moves a person (API, dashboard, CLI) or a retrain
makes; `status` reads the live figures and the verdict so far; `evaluate` (the worker, each
round) records new figures and acts on the verdict of `pipelines.loop.rollout_tests`. The
serving side (which requests go where) is `pipelines.serving.rollout`. Every move is a
`model_events` row with the rollout's id, so the history says which version served when.
Rollouts are of the tabular model; the vision model is promoted directly.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pipelines.loop import rollout_tests
from pipelines.models import promotion
from pipelines.models.registry import CHALLENGER, CHAMPION, Registry
from pipelines.serving.model import load_version
from pipelines.settings import Settings
from pipelines.store import Store, new_id, utcnow
from pipelines.store.rollouts import FIGURES, PROMOTED, STARTED, STOPPED

logger = logging.getLogger(__name__)

Mode = Literal["shadow", "canary"]
MODES: tuple[Mode, ...] = ("shadow", "canary")


class RolloutError(ValueError):
    """A rollout move that can't happen; the message says why."""


def start(
    store: Store,
    registry: Registry,
    *,
    mode: Mode,
    version: str,
    share: float,
    who: str,
    why: str,
    retrain_event: str | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Start a rollout of `version` beside the champion; returns its `rollout_started` row.

    Args:
        share: Of requests, in (0, 1]: also answered by a shadow, or served by a canary.
        retrain_event: The retraining run that made the challenger, when one did.
        replace: Stop a running rollout first (a retrain's newer challenger replaces it);
            otherwise a running rollout is an error.

    Raises:
        RolloutError: No champion, an unknown version, the champion itself, features that
            differ from the champion's, a share out of range, or a rollout already running.
    """
    if mode not in MODES:
        raise RolloutError(f"unknown rollout mode {mode!r}; expected one of {MODES}")
    if not 0 < share <= 1 or (mode == "canary" and share >= 1):
        raise RolloutError(
            f"share {share} is out of range: a shadow's is in (0, 1], a canary's in (0, 1) "
            "(a canary serving every request is a promotion)"
        )
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        raise RolloutError("there is no champion to roll out beside: promote a version first")
    version = str(version)
    known = {v.version for v in registry.versions()}
    if version not in known:
        raise RolloutError(
            f"{registry.model_name} has no version {version}; known: {sorted(known)}"
        )
    if version == champion:
        raise RolloutError(f"version {version} is the champion already")
    _check_features(registry, champion, version)
    running = store.active_rollout(registry.model_name)
    if running is not None:
        if not replace:
            raise RolloutError(
                f"a {running['details'].get('mode')} rollout of version {running['to_version']} "
                f"is running ({running['rollout_id']}): stop it first"
            )
        _end(store, registry, running, STOPPED, who=who, why=f"replaced by version {version}")
    rollout_id = new_id()
    details = {"mode": mode, "share": share, "retrain_event": retrain_event}
    store.add_model_event(
        registry.model_name,
        STARTED,
        champion,
        version,
        who=who,
        why=why,
        rollout_id=rollout_id,
        details=details,
    )
    registry.set_alias(CHALLENGER, version)
    logger.info("%s rollout %s of v%s beside v%s (%s)", mode, rollout_id, version, champion, why)
    return {
        "rollout_id": rollout_id,
        **details,
        "champion_version": champion,
        "challenger_version": version,
    }


def stop(store: Store, registry: Registry, *, who: str, why: str) -> dict[str, Any]:
    """End the running rollout; the champion serves every request again."""
    running = _running(store, registry)
    _end(store, registry, running, STOPPED, who=who, why=why)
    return {"rollout_id": running["rollout_id"], "stopped": running["to_version"]}


def promote_now(store: Store, registry: Registry, *, who: str, why: str) -> dict[str, Any]:
    """Promote the running rollout's challenger without waiting for the test."""
    running = _running(store, registry)
    return _promote(store, registry, running, who=who, why=why)


def status(settings: Settings, store: Store, registry: Registry) -> dict[str, Any]:
    """The running rollout (or the last one, ended) with its live figures and verdict."""
    running = store.active_rollout(registry.model_name)
    if running is None:
        return {"state": "none", "last": _last(store, registry)}
    verdict = _verdict(settings, store, running)
    return {
        "state": "running",
        **_describe(running),
        "running_for_s": (utcnow() - running["ts"]).total_seconds(),
        **_figures(store, running),
        "verdict": verdict.to_dict(),
    }


def evaluate(
    settings: Settings, store: Store, registry: Registry, *, who: str = "worker"
) -> dict[str, Any]:
    """Read the running rollout's labels and act: record new figures, then promote or stop
    when the test decides. A rollout whose champion was moved meanwhile is stopped (its
    comparison no longer holds)."""
    running = store.active_rollout(registry.model_name)
    if running is None:
        return {"state": "none"}
    champion = registry.alias_version(CHAMPION)
    if champion != running["from_version"]:
        why = f"the champion moved from v{running['from_version']} to v{champion}"
        _end(store, registry, running, STOPPED, who=who, why=why)
        return {"state": "stopped", "why": why}
    verdict = _verdict(settings, store, running)
    labels = _labels(verdict)
    last = _last_figures(store, running["rollout_id"])
    if last is None or last.get("labels") != labels:
        store.add_model_event(
            registry.model_name,
            FIGURES,
            running["from_version"],
            running["to_version"],
            who=who,
            why=verdict.reason,
            rollout_id=running["rollout_id"],
            details={"labels": labels, **verdict.to_dict()},
        )
    if verdict.action == "promote":
        return {
            "state": "promoted",
            **_promote(
                store, registry, running, who=who, why=verdict.reason, details=verdict.to_dict()
            ),
        }
    if verdict.action == "stop":
        _end(
            store,
            registry,
            running,
            STOPPED,
            who=who,
            why=verdict.reason,
            details=verdict.to_dict(),
        )
        return {"state": "stopped", "why": verdict.reason}
    return {"state": "running", "why": verdict.reason}


def guard_rollback(store: Store, registry: Registry, rollout_id: str, *, why: str) -> bool:
    """Stop a canary that the serving guard found failing (its 5xx share or p99 latency);
    False when that rollout is no longer running (another process stopped it first)."""
    running = store.active_rollout(registry.model_name)
    if running is None or running["rollout_id"] != rollout_id:
        return False
    _end(
        store,
        registry,
        running,
        STOPPED,
        who="canary guard",
        why=why,
        details={"rolled_back": True},
    )
    return True


# -- inside ------------------------------------------------------------------------------------


def _check_features(registry: Registry, champion: str, version: str) -> None:
    """The challenger must take the champion's requests: the same features, of the same kinds."""
    try:
        theirs = load_version(registry, version).schema
    except Exception as exc:
        raise RolloutError(f"version {version} can't be loaded for serving: {exc}") from None
    ours = load_version(registry, champion).schema
    if [(f.name, f.kind) for f in theirs.features] != [(f.name, f.kind) for f in ours.features]:
        raise RolloutError(
            f"version {version} takes features {theirs.names}, the champion v{champion} takes "
            f"{ours.names}: a rollout needs the same features"
        )


def _running(store: Store, registry: Registry) -> dict[str, Any]:
    running = store.active_rollout(registry.model_name)
    if running is None:
        raise RolloutError("no rollout is running")
    return running


def _end(
    store: Store,
    registry: Registry,
    running: dict[str, Any],
    event: str,
    *,
    who: str,
    why: str,
    details: dict[str, Any] | None = None,
) -> None:
    store.add_model_event(
        registry.model_name,
        event,
        running["from_version"],
        running["to_version"],
        who=who,
        why=why,
        rollout_id=running["rollout_id"],
        details={"mode": running["details"].get("mode"), **(details or {})},
    )
    if registry.alias_version(CHALLENGER) == running["to_version"]:
        registry.delete_alias(CHALLENGER)
    logger.info("rollout %s %s: %s", running["rollout_id"], event, why)


def _promote(
    store: Store,
    registry: Registry,
    running: dict[str, Any],
    *,
    who: str,
    why: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The challenger becomes the champion (a `promoted` row, as any promotion) and the
    rollout ends (`rollout_promoted`)."""
    moved = promotion.promote(
        store,
        registry,
        running["to_version"],
        who=who,
        why=f"rollout {running['rollout_id']}: {why}",
    )
    _end(store, registry, running, PROMOTED, who=who, why=why, details=details)
    return moved


def _verdict(settings: Settings, store: Store, running: dict[str, Any]) -> rollout_tests.Verdict:
    """The live test on the rollout's labels so far."""
    budget, margin = settings.rollout_label_budget, settings.rollout_margin
    since = running["ts"]
    if running["details"].get("mode") == "shadow":
        pairs = store.shadow_pairs(running["rollout_id"], since, budget)

        def compare_at(n: int) -> rollout_tests.Comparison:
            return rollout_tests.paired(pairs[:n], margin)

        labels = len(pairs)
    else:
        champion, challenger = running["from_version"], running["to_version"]
        # Both arms' labels, in arrival order, up to the budget's worth of challenger labels
        # (the champion's arm is the larger one: it is cut where the challenger's budget is).
        rows = store.arm_labels(running["model_name"], (champion, challenger), since, budget * 100)
        arms = [(version == challenger, right) for version, right in rows]
        labels = sum(1 for is_challenger, _ in arms if is_challenger)

        def compare_at(n: int) -> rollout_tests.Comparison:
            seen, cut = 0, len(arms)
            for i, (is_challenger, _) in enumerate(arms):
                seen += is_challenger
                if seen == n:
                    cut = i + 1
                    break
            head = arms[:cut]
            return rollout_tests.two_sample(
                [right for is_challenger, right in head if not is_challenger],
                [right for is_challenger, right in head if is_challenger],
                margin,
            )

    return rollout_tests.decide(
        min(labels, budget),
        compare_at,
        alpha=settings.rollout_alpha,
        margin=margin,
        budget=budget,
        looks=settings.rollout_looks,
    )


def _labels(verdict: rollout_tests.Verdict) -> int:
    counts = verdict.comparison.counts
    return int(counts.get("n", counts.get("n_challenger", 0)))


def _figures(store: Store, running: dict[str, Any]) -> dict[str, Any]:
    if running["details"].get("mode") == "shadow":
        return {"agreement": store.shadow_agreement(running["rollout_id"], running["ts"])}
    return {}


def _describe(row: dict[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return {
        "rollout_id": row["rollout_id"],
        "mode": details.get("mode"),
        "share": details.get("share"),
        "champion_version": row["from_version"],
        "challenger_version": row["to_version"],
        "started_at": row["ts"],
        "started_by": row["who"],
        "why": row["why"],
        "retrain_event": details.get("retrain_event"),
    }


def _last_figures(store: Store, rollout_id: str) -> dict[str, Any] | None:
    rows = [e for e in store.rollout_events(rollout_id) if e["event"] == FIGURES]
    return rows[-1]["details"] if rows else None


def _last(store: Store, registry: Registry) -> dict[str, Any] | None:
    """The last rollout that ended: how it started and how it ended."""
    for event in store.model_events(registry.model_name, limit=200):
        if event["event"] in (PROMOTED, STOPPED) and event.get("rollout_id"):
            rows = store.rollout_events(event["rollout_id"])
            started = next((r for r in rows if r["event"] == STARTED), None)
            if started is None:
                return None
            return {
                **_describe(started),
                "ran_for_s": (event["ts"] - started["ts"]).total_seconds(),
                "ended": event["event"],
                "ended_at": event["ts"],
                "ended_by": event["who"],
                "ended_why": event["why"],
            }
    return None
