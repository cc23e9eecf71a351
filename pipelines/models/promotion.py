"""Promotion and rollback: move the `champion` alias and record why, in one place.

Every move is a `model_events` row (from, to, who, why); rollback walks that history back.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.models.registry import CHAMPION, Registry
from pipelines.store import Store

logger = logging.getLogger(__name__)


class PromotionError(ValueError):
    """A promotion or rollback that can't happen; the message says why."""


def promote(
    store: Store, registry: Registry, version: str, *, who: str, why: str
) -> dict[str, Any]:
    known = {v.version for v in registry.versions()}
    if str(version) not in known:
        raise PromotionError(
            f"{registry.model_name} has no version {version}; known: {sorted(known)}"
        )
    previous = registry.alias_version(CHAMPION)
    if previous == str(version):
        raise PromotionError(f"version {version} is already the champion")
    registry.set_alias(CHAMPION, str(version))
    store.add_model_event(registry.model_name, "promoted", previous, str(version), who=who, why=why)
    logger.info("champion %s -> %s (%s: %s)", previous, version, who, why)
    return {"from_version": previous, "to_version": str(version)}


def rollback(store: Store, registry: Registry, *, who: str, why: str) -> dict[str, Any]:
    """Make the champion before the current one champion again.

    Promotions push the outgoing champion on a stack and rollbacks pop it, so repeated
    rollbacks walk back through history (3 → 2 → 1) instead of bouncing between two versions.
    """
    current = registry.alias_version(CHAMPION)
    if current is None:
        raise PromotionError("there is no champion to roll back")
    previous: list[str] = []
    for event in reversed(store.model_events(registry.model_name, limit=10_000)):
        if event["event"] == "promoted" and event["from_version"]:
            previous.append(event["from_version"])
        elif event["event"] == "rolled_back" and previous:
            previous.pop()
    if not previous:
        raise PromotionError(f"version {current} has no earlier champion to roll back to")
    target = previous[-1]
    registry.set_alias(CHAMPION, target)
    store.add_model_event(registry.model_name, "rolled_back", current, target, who=who, why=why)
    logger.info("rolled back champion %s -> %s", current, target)
    return {"from_version": current, "to_version": target}
