"""Start secantusdb 0.7.0b3 with the compatibility fixes OpenHIM core 4.0.5 needs.

Usage: ``python tests/support/secantus_launcher.py --host 127.0.0.1 --port N
--storage-path :memory:`` (any secantus CLI argument is passed through).

Core 4.0.5 (mongoose 4 / node driver 2.2) trips over three secantus defects. Rather than
patching the installed package, this script wraps the command dispatch that
``secantus.server`` imported, then runs secantus's own CLI ``main()``:

1. ``findandmodify`` (lower case, sent by the old driver) is answered with "internal server
   error" because the handler reads ``doc["findAndModify"]``: rename the key.
2. A bare regex as a filter value (``{email: /^x$/i}``) on an indexed field is looked up as an
   equality and matches nothing: rewrite it to ``{email: {$regex: /^x$/i}}``.
3. ``$pushAll`` (removed in MongoDB 3.6, still sent by mongoose 4) is an "Unknown modifier":
   rewrite it to ``$push: {field: {$each: [...]}}``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import secantus.server
from bson import Regex
from secantus.cli import main as secantus_main

_LOGICAL_OPS = ("$and", "$or", "$nor")


def fix_filter(flt: Any) -> Any:
    """Return ``flt`` with every bare regex field value wrapped in ``$regex``."""
    if not isinstance(flt, Mapping):
        return flt
    fixed: dict[str, Any] = {}
    for key, value in flt.items():
        if key in _LOGICAL_OPS and isinstance(value, list):
            fixed[key] = [fix_filter(item) for item in value]
        elif not key.startswith("$") and isinstance(value, re.Pattern):
            fixed[key] = {"$regex": Regex.from_native(value)}
        elif not key.startswith("$") and isinstance(value, Regex):
            fixed[key] = {"$regex": value}
        else:
            fixed[key] = value
    return fixed


def fix_update(update: Any) -> Any:
    """Return ``update`` with ``$pushAll`` turned into ``$push`` + ``$each``."""
    if not isinstance(update, Mapping) or "$pushAll" not in update:
        return update
    fixed = {key: value for key, value in update.items() if key != "$pushAll"}
    push = dict(fixed.get("$push") or {})
    for field, values in update["$pushAll"].items():
        push[field] = {"$each": list(values)}
    fixed["$push"] = push
    return fixed


def _fix_statements(statements: Any, filter_key: str, update_key: str | None) -> Any:
    """Fix each statement of an ``update``/``delete`` command's list."""
    if not isinstance(statements, list):
        return statements
    fixed = []
    for stmt in statements:
        if isinstance(stmt, Mapping):
            stmt = dict(stmt)
            if filter_key in stmt:
                stmt[filter_key] = fix_filter(stmt[filter_key])
            if update_key and update_key in stmt:
                stmt[update_key] = fix_update(stmt[update_key])
        fixed.append(stmt)
    return fixed


def fix_command(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a command document with the three defects worked around."""
    if "$query" in doc and isinstance(doc["$query"], Mapping):  # legacy OP_QUERY wrapping
        return {**doc, "$query": fix_command(doc["$query"])}
    items = list(doc.items())
    if items and items[0][0] == "findandmodify":
        items[0] = ("findAndModify", items[0][1])
    cmd = dict(items)
    name = items[0][0] if items else ""
    if name == "find" and "filter" in cmd:
        cmd["filter"] = fix_filter(cmd["filter"])
    elif name in ("count", "distinct") and "query" in cmd:
        cmd["query"] = fix_filter(cmd["query"])
    elif name == "findAndModify":
        if "query" in cmd:
            cmd["query"] = fix_filter(cmd["query"])
        if "update" in cmd:
            cmd["update"] = fix_update(cmd["update"])
    elif name == "update":
        cmd["updates"] = _fix_statements(cmd.get("updates"), "q", "u")
    elif name == "delete":
        cmd["deletes"] = _fix_statements(cmd.get("deletes"), "q", None)
    elif name == "aggregate" and isinstance(cmd.get("pipeline"), list):
        cmd["pipeline"] = [
            {**stage, "$match": fix_filter(stage["$match"])}
            if isinstance(stage, Mapping) and "$match" in stage
            else stage
            for stage in cmd["pipeline"]
        ]
    return cmd


def install() -> None:
    """Wrap the dispatch function the wire server calls (idempotent)."""
    original: Callable[..., dict[str, Any]] = secantus.server.dispatch
    if getattr(original, "_openhim_compat", False):
        return

    def dispatch(doc: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return original(fix_command(doc), ctx)

    dispatch._openhim_compat = True  # type: ignore[attr-defined]
    secantus.server.dispatch = dispatch


if __name__ == "__main__":
    install()
    sys.exit(secantus_main())
