"""Where the sources and the generated artifacts live."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
ARGOCD = REPO / "argocd" / "resource_customizations"
CHART = REPO / "charts" / "speculators-operator"
CRD_CHART = REPO / "charts" / "speculators-operator-crds"
BUNDLE = REPO / "bundle"

# The CRDs of the API group the operator owns (crds/ also holds Kopf's peering CRDs).
OWNED_CRD_PREFIX = "speculators.ai_"
