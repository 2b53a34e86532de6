"""vLLM's Prometheus exposition and the spec-decode acceptance derived from it (stdlib only: the operator
imports it too)."""
