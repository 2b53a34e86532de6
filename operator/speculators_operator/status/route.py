"""The Route's admission into the Speculator's status: condition RouteAdmitted and the public URL.

The router (not the API server) admits a Route and writes `status.ingress[]` with its host and an
`Admitted` condition; until then the Route serves nothing. RouteAdmitted does not gate Ready: the model is
served in-cluster either way.
"""

from __future__ import annotations

from typing import Any

from speculators_operator.status.conditions import Cond, find


def admitted_host(route: dict[str, Any] | None) -> str | None:
    for ingress in ((route or {}).get("status") or {}).get("ingress") or []:
        admitted = find(ingress.get("conditions"), "Admitted")
        if admitted is not None and admitted.get("status") == "True" and ingress.get("host"):
            return str(ingress["host"])
    return None


def route_condition(route: dict[str, Any] | None, *, served: bool, name: str) -> Cond:
    if not served:
        return Cond(
            "RouteAdmitted",
            "False",
            "RouteAPINotServed",
            "spec.route is set but the cluster does not serve route.openshift.io/v1 (not OpenShift)",
        )
    if route is None:
        return Cond("RouteAdmitted", "Unknown", "Creating", f"creating Route {name}")
    host = admitted_host(route)
    if host:
        return Cond("RouteAdmitted", "True", "Admitted", f"https://{host}")
    for ingress in (route.get("status") or {}).get("ingress") or []:
        admitted = find(ingress.get("conditions"), "Admitted")
        if admitted is not None and admitted.get("status") == "False":
            reason = admitted.get("reason") or "Rejected"
            return Cond("RouteAdmitted", "False", reason, admitted.get("message") or f"Route {name} rejected")
    return Cond("RouteAdmitted", "Unknown", "Pending", f"waiting for a router to admit Route {name}")


def public_url(route: dict[str, Any] | None) -> str | None:
    host = admitted_host(route)
    return f"https://{host}" if host else None
