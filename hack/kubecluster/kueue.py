"""Kueue's real controller manager against the embedded control plane.

hack/build-control-plane.sh builds `kueue` from its Go module (sigs.k8s.io/kueue) and renders Kueue's own
release manifests (kustomize config/default of the same module) next to it. This module installs what the
controller needs from them and runs it as a local process:

- the CRDs (with their conversion-webhook stanzas, as released), the kueue-system namespace and the
  webhook-certificate Secret: Kueue's internal certificate management generates its serving certificate
  and injects the CA into exactly these objects before it starts its controllers;
- Kueue's mutating and validating webhook configurations, with one change: an objectSelector no object
  matches. The apiserver here has no service network to reach a webhook Service by (no
  cluster DNS, no kube-proxy), and Kueue's cert bootstrap needs the configurations to exist. So no
  webhook is ever called: Jobs reach Kueue suspended as the operator creates them, which is what its
  job webhook would otherwise enforce. The controllers (queueing, quota, admission, Job unsuspend and
  finish) are Kueue's own, unchanged.

Stand-in for the kubelet's secret volume: Kueue's cert rotator writes the serving certificate into the
Secret and waits for it to appear as files in its certDir (in a cluster, the Secret is mounted there);
a thread here copies the Secret's keys into that directory, as the kubelet would.
"""

from __future__ import annotations

import base64
import copy
import os
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient

from . import procs
from .binaries import BinariesNotFound, _script_default, find_binaries
from .manifests import Manifest, apply_objects, load_manifests, request, wait_crds_established
from .wait import wait_for

NAMESPACE = "kueue-system"
CERT_SECRET = "kueue-webhook-server-cert"
# The label the neutralised webhooks select on; no object carries it.
NO_WEBHOOK_LABEL = "speculators.test/kueue-webhooks-unreachable"
INSTALLED_KINDS = (
    "CustomResourceDefinition",
    "Namespace",
    "Secret",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)


def kueue_version() -> str:
    return os.environ.get("KUEUE_VERSION") or _script_default("KUEUE_VERSION")


@dataclass(frozen=True)
class KueueBuild:
    binary: Path
    manifests: Path
    version: str


def find_kueue() -> KueueBuild:
    """The built controller and its rendered manifests; raises BinariesNotFound naming the fix."""
    bin_dir = find_binaries().bin_dir
    version = kueue_version()
    build = KueueBuild(bin_dir / "kueue", bin_dir.parent / f"kueue-{version}.yaml", version)
    missing = [str(p) for p in (build.binary, build.manifests) if not p.exists()]
    if missing:
        raise BinariesNotFound(
            f"Kueue {version} is not built: {', '.join(missing)} missing. Run `make control-plane` "
            "(hack/build-control-plane.sh builds it from sigs.k8s.io/kueue with the Go module proxy)."
        )
    return build


def install_objects(docs: list[Manifest]) -> list[Manifest]:
    """What to install from Kueue's release manifests (see the module docstring for the one change)."""
    out = []
    for doc in docs:
        if doc.get("kind") not in INSTALLED_KINDS:
            continue
        doc = copy.deepcopy(doc)
        if doc["kind"].endswith("WebhookConfiguration"):
            for hook in doc.get("webhooks") or []:
                # objectSelector: a namespaceSelector would not spare Kueue's own cluster-scoped objects.
                hook["objectSelector"] = {
                    "matchExpressions": [{"key": NO_WEBHOOK_LABEL, "operator": "Exists"}]
                }
        out.append(doc)
    return out


def configuration(health_port: int, webhook_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration for a local process: loopback ports, no leader election, Jobs only."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": "kueue-webhook-service",
            "webhookSecretName": CERT_SECRET,
        },
        "integrations": {"frameworks": ["batch/job"]},
        # The on-demand visibility API server needs an APIService routed to it: not here.
        "featureGates": {"VisibilityOnDemand": False},
    }


class KueueController:
    """Installs Kueue's objects and runs its controller manager until stop()."""

    def __init__(self, api: ApiClient, kubeconfig: Path, workdir: Path) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.build = find_kueue()
        self.installed: list[Manifest] = []
        self.proc: procs.Proc | None = None
        self.health_port = procs.free_port()
        self._stop = threading.Event()
        self._mount: threading.Thread | None = None

    def install(self) -> None:
        objs = install_objects(load_manifests([self.build.manifests]))
        crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
        apply_objects(self.api, crds, "speculators-tests", force=True)
        wait_crds_established(self.api, [o["metadata"]["name"] for o in crds])
        rest = [o for o in objs if o["kind"] != "CustomResourceDefinition"]
        apply_objects(
            self.api, sorted(rest, key=lambda o: o["kind"] != "Namespace"), "speculators-tests", force=True
        )
        self.installed = objs

    def start(self, timeout: float = 120.0) -> None:
        cert_dir = self.workdir / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "kueue-config.yaml"
        config.write_text(yaml.safe_dump(configuration(self.health_port, procs.free_port(), cert_dir)))
        self._stop.clear()
        self._mount = threading.Thread(target=self._mount_secret, args=(cert_dir,), daemon=True)
        self._mount.start()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.proc = procs.start(
            "kueue",
            [
                str(self.build.binary),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig}",
                "--zap-log-level=2",
            ],
            self.workdir / "kueue.log",
            self.workdir / "pids",
            detach=False,
            env=env,
        )
        try:
            wait_for(self._ready, timeout=timeout, what=f"Kueue {self.build.version} ready", interval=0.2)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- kueue.log ---\n{self.proc.tail(60)}") from exc

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"kueue exited with {self.proc.exit_code()}:\n{self.proc.tail(60)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _mount_secret(self, cert_dir: Path) -> None:
        """The kubelet's part: the Secret's keys as files in certDir, written then renamed, kept current."""
        path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{CERT_SECRET}"
        seen: dict[str, str] = {}
        while not self._stop.wait(0.25):
            try:
                data = (request(self.api, "GET", path, timeout=5) or {}).get("data") or {}
            except Exception:  # the apiserver restarting, or the Secret not there yet: try again
                continue
            for key, value in data.items():
                if seen.get(key) != value:
                    tmp = cert_dir / f".{key}.tmp"
                    tmp.write_bytes(base64.b64decode(value))
                    tmp.replace(cert_dir / key)
                    seen[key] = value

    def stop(self) -> None:
        self._stop.set()
        if self._mount is not None:
            self._mount.join(timeout=10)
            self._mount = None
        if self.proc is not None:
            procs.stop([self.proc], self.workdir / "pids")
            self.proc = None
