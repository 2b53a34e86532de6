"""Runs an Argo CD health.lua the way Argo CD runs a script from argocd-cm, on a real Lua 5.1.

Argo CD (util/lua/lua.go) runs custom health scripts in gopher-lua (Lua 5.1) with SkipOpenLibs unless
`resource.customizations.useOpenLibs.<group>_<Kind>` is set: only the base, package and table
libraries and a "safe" os (clock, date, difftime, time) are loaded, so `string.*`, `math.*` and string
methods are unavailable. The live object is the global `obj` (its JSON decoded into tables, arrays
1-based); the script returns a table with `status` and `message`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

HEALTH_CODES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")

# What Argo CD leaves out of a custom script's environment (gopher-lua's base library has the rest).
_SANDBOX = """
local smt = getmetatable("")
if smt ~= nil then smt.__index = nil end  -- no string methods without the string library
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
local real_os = os
os = {clock = real_os.clock, date = real_os.date, difftime = real_os.difftime, time = real_os.time}
"""


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def lua_version() -> str:
    return str(lua51.LuaRuntime().execute("return _VERSION"))


def _to_lua(runtime: lua51.LuaRuntime, value: Any) -> Any:
    """JSON value -> Lua value as Argo CD decodes it (objects and arrays to tables, null to nil)."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for i, item in enumerate(value, start=1):
            table[i] = _to_lua(runtime, item)
        return table
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)  # Lua 5.1 has only doubles
    raise TypeError(f"not a JSON value: {value!r}")


def run_health(script: str, obj: dict[str, Any]) -> Health:
    """Evaluate a health script on `obj` (a fresh interpreter each time, as Argo CD does per call)."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(_SANDBOX)
    # A JSON round trip first: Argo CD sees the object as JSON (YAML timestamps become strings).
    runtime.globals()["obj"] = _to_lua(runtime, json.loads(json.dumps(obj, default=str)))
    result = runtime.execute(script)
    if result is None or lua51.lua_type(result) != "table":
        raise AssertionError(f"health script returned {result!r}, not a table")
    status, message = result["status"], result["message"]
    if status not in HEALTH_CODES:
        raise AssertionError(f"health script returned status {status!r}, not one of {HEALTH_CODES}")
    return Health(str(status), "" if message is None else str(message))


def run_health_file(path: Path, obj: dict[str, Any]) -> Health:
    return run_health(path.read_text(), obj)
