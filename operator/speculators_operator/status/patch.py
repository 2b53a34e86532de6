"""JSON merge patches (RFC 7386) between two status objects: send only what changed, null what went."""

from __future__ import annotations

from typing import Any


def merge_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch turning `old` into `new` ({} when they are equal).

    Lists are replaced whole (merge patch has no list semantics), which is why conditions[] always
    travels complete.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    return patch
