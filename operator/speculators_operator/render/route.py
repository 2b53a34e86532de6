"""An OpenShift Route to a Speculator (spec.route), for clusters that serve route.openshift.io.

Edge TLS (the router terminates it; plain HTTP is redirected), to the Service the backend serves on: the
Speculator's own Service, or the predictor Service KServe creates in Standard mode. The target port is the
vLLM container port, which names the endpoints' port whatever the Service calls it.
"""

from __future__ import annotations

from typing import Any

from speculators_operator import constants as c
from speculators_operator.render import common as r
from speculators_operator.render.speculator import SpeculatorContext

API_VERSION = "route.openshift.io/v1"


def route(ctx: SpeculatorContext, canary_percent: int | None = None) -> dict[str, Any]:
    """With `canary_percent` (backend kserve, a canary running), the router splits the traffic as KServe's
    gateway does: KServe's canary has a Service of its own, which the predictor Service does not select."""
    spec: dict[str, Any] = {
        "to": {"kind": "Service", "name": ctx.service_name, "weight": 100 - (canary_percent or 0)},
        "port": {"targetPort": ctx.spec.vllm.port},
        "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
        "wildcardPolicy": "None",
    }
    if canary_percent:
        spec["alternateBackends"] = [{"kind": "Service", "name": ctx.canary_name, "weight": canary_percent}]
    if ctx.spec.route.host:
        spec["host"] = ctx.spec.route.host
    labels = r.labels(c.APP_SPECULATOR, "route", ctx.name, c.LABEL_SPECULATOR, ctx.name)
    return {
        "apiVersion": API_VERSION,
        "kind": "Route",
        "metadata": r.child_metadata(ctx.body, ctx.name, labels),
        "spec": spec,
    }
