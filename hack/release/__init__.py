"""Release artifacts generated from the repository's sources: the Helm charts' generated parts and the OLM
bundle (`python -m release chart|bundle [--check]`, run by `make chart` / `make bundle`).

Sources: speculators_core/version.py (version, images), crds/ (CRDs), speculators_operator.rbac (rules),
argocd/ (health checks), examples/ (alm-examples), and the chart's own templates (the bundle's
Deployment and permissions are rendered from the chart with `helm template`).
"""
