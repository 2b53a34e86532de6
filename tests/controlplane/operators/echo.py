"""A minimal Kopf operator for the harness test: copies data.say of labelled ConfigMaps into an annotation."""

import kopf


@kopf.on.create("", "v1", "configmaps", labels={"speculators.ai/echo": "true"})
def echo(body: kopf.Body, patch: kopf.Patch, **_: object) -> None:
    patch.metadata.annotations["speculators.ai/echoed"] = body["data"]["say"]
