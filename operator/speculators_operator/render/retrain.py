"""A Speculator's retrain: the SpeculatorTraining <name>-r<N> made from spec.retrain.template."""

from __future__ import annotations

from typing import Any

from speculators_operator import constants as c
from speculators_operator.render import common as r
from speculators_operator.render.speculator import SpeculatorContext, service_url

NAME_MAX = 55  # SpeculatorTraining names (their Jobs append -datagen)


def retrain_name(speculator: str, n: int) -> str:
    """<name>-r<N>, the name shortened when needed so that the suffix always fits."""
    suffix = f"-r{n}"
    return speculator[: NAME_MAX - len(suffix)].rstrip("-") + suffix


def retrain_labels(ctx: SpeculatorContext, name: str) -> dict[str, str]:
    return r.labels(c.APP_TRAINING, "retrain", name, c.LABEL_SPECULATOR, ctx.name)


def retrain_training(ctx: SpeculatorContext, name: str, served_uri: str) -> dict[str, Any]:
    """The template with this Speculator's verifier; without data, its captured traffic, answered again by
    its own verifier through its Service (the proxy does not capture those requests)."""
    retrain = ctx.spec.retrain
    assert retrain is not None
    spec = retrain.template.wire()
    spec["verifier"] = ctx.spec.verifier.wire()
    endpoint = f"{service_url(ctx)}/v1"
    if retrain.template.data is None:
        assert ctx.capture_uri is not None  # admission: template data or capture
        spec["data"] = {
            "datasets": [{"uri": ctx.capture_uri}],
            "regenerateResponses": True,
            "regenerateEndpoint": endpoint,
        }
    elif retrain.template.data.regenerate_responses and not retrain.template.data.regenerate_endpoint:
        spec["data"]["regenerateEndpoint"] = endpoint
    metadata = r.child_metadata(
        ctx.body, name, retrain_labels(ctx, name), {c.ANNOTATION_RETRAIN_OF: served_uri}
    )
    return {"apiVersion": c.API_VERSION, "kind": c.TRAINING_KIND, "metadata": metadata, "spec": spec}
