"""The one place where the project's version and default image names live.

The operator's defaults, the Helm chart, the OLM bundle and the Dockerfiles are generated from or
checked against these values.
"""

__version__ = "0.1.0"

IMAGE_REGISTRY = "ghcr.io/speculators-ai"
OPERATOR_IMAGE = f"{IMAGE_REGISTRY}/speculators-operator:{__version__}"
RUNTIME_IMAGE = f"{IMAGE_REGISTRY}/speculators-runtime:{__version__}"
# vLLM release whose speculators parser and --speculative-config keys we test against.
VLLM_VERSION = "0.33.0"
VLLM_IMAGE = f"docker.io/vllm/vllm-openai:v{VLLM_VERSION}"
# Upstream speculators release whose format we read and write.
SPECULATORS_FORMAT_VERSION = "0.9.0"
