"""Kubeconfig files (credentials embedded, so the file alone is enough) and API clients built from them."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from kubernetes import client, config

from .pki import ClientCert


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca_cert: Path, user: ClientCert, name: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}
        ],
        "users": [
            {
                "name": name,
                "user": {"client-certificate-data": _b64(user.cert), "client-key-data": _b64(user.key)},
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def new_api_client(kubeconfig: Path | str) -> client.ApiClient:
    """An ApiClient for the kubeconfig's current context (never touches the global default config)."""
    return config.new_client_from_config(config_file=str(kubeconfig))
