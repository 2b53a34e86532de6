"""The embedded control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
loopback, from the binaries hack/build-control-plane.sh caches.

State directory layout: pki/, etcd/ (data), logs/<component>.log, pids/<component>.json, kwok/stages.yaml,
kubeconfig (admin, system:masters), <component>.kubeconfig, cluster.json (what `status` and `down` read).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from . import procs
from .binaries import Binaries, find_binaries, kubernetes_version
from .kubeconfig import new_api_client, write_kubeconfig
from .manifests import apply_objects, request
from .nodes import KWOK_ANNOTATION, simulated_objects
from .pki import Pki, generate_pki

STAGES_DIR = Path(__file__).with_name("stages")
FIELD_MANAGER = "kubecluster"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
HOSTPATH_PV_ROOT = Path("/tmp/hostpath_pv")  # where kcm's host-path provisioner creates volumes
# Components in start order; stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Client identities: the controllers run with their real RBAC roles, as in a kubeadm cluster.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    # kwok stands in for every kubelet; it patches node and pod status cluster-wide.
    "kwok": ("kwok-controller", "system:masters"),
}


class StartupError(RuntimeError):
    """A component failed to start or become ready; the message carries the tail of its log."""


def random_loopback_cidr() -> str:
    """A /20 inside 127.0.0.0/8 (Linux routes all of it to lo, so any address there can be bound without
    configuration). Random so concurrent clusters on one machine hand out different pod IPs."""
    return f"127.{random.randint(64, 250)}.{random.randrange(0, 256, 16)}.0/20"


@dataclass
class ClusterConfig:
    nodes: int = 4
    gpus_per_node: int = 8
    pod_cidr: str = field(default_factory=random_loopback_cidr)
    startup_timeout: float = 90.0
    verbosity: int = 1


@dataclass
class ClusterState:
    """What a later process (`status`, `down`, a test session) needs to find the cluster."""

    server: str
    kubeconfig: str
    pod_cidr: str
    version: str
    bin_dir: str
    ports: dict[str, int]
    nodes: list[str]
    started_at: float = 0.0  # epoch seconds

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        return cls(**json.loads((state_dir / "cluster.json").read_text()))


class EmbeddedCluster:
    def __init__(
        self,
        state_dir: Path | str,
        config: ClusterConfig | None = None,
        binaries: Binaries | None = None,
        *,
        detach: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.config = config or ClusterConfig()
        self.binaries = binaries
        self.detach = detach
        self.procs: dict[str, procs.Proc] = {}
        self._launch: dict[str, tuple[list[str], dict[str, str] | None]] = {}  # for restart()
        self.pki: Pki | None = None
        self.state: ClusterState | None = None
        self.startup_seconds: float | None = None

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- paths ---------------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    def log(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    # --- start ---------------------------------------------------------------------------------------
    def start(self) -> ClusterState:
        t0 = time.monotonic()
        running = [p.name for p in procs.load(self.pid_dir) if p.alive()]
        if running:
            raise StartupError(
                f"a cluster is already running from {self.state_dir} ({', '.join(running)}); "
                f"stop it first: python -m kubecluster down --state-dir {self.state_dir}"
            )
        self.binaries = self.binaries or find_binaries()
        for stale in ("etcd", "logs", "pids", "pki", "kwok"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(t0)
        except BaseException:
            self.stop()
            raise
        return self.state  # type: ignore[return-value]

    def _start(self, t0: float) -> None:
        cfg = self.config
        ipaddress.ip_network(cfg.pod_cidr)  # fail early on a typo
        ports = {k: procs.free_port() for k in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")}
        self.pki = pki = generate_pki(self.state_dir / "pki", CLIENTS, SERVICE_IP)
        server = f"https://127.0.0.1:{ports['apiserver']}"
        kubeconfigs = {
            name: write_kubeconfig(
                self.kubeconfig if name == "admin" else self.state_dir / f"{name}.kubeconfig",
                server,
                pki.ca_cert,
                pki.clients[name],
                "speculators-embedded",
            )
            for name in CLIENTS
        }
        nodes = [
            o["metadata"]["name"]
            for o in simulated_objects(cfg.nodes, cfg.gpus_per_node)
            if o["kind"] == "Node"
        ]
        self.state = ClusterState(
            server=server,
            kubeconfig=str(self.kubeconfig),
            pod_cidr=cfg.pod_cidr,
            version=kubernetes_version(),
            bin_dir=str(self.binaries.bin_dir),  # type: ignore[union-attr]
            ports=ports,
            nodes=nodes,
            started_at=time.time(),
        )
        (self.state_dir / "cluster.json").write_text(json.dumps(asdict(self.state), indent=2))

        self._spawn("etcd", self._etcd_args(ports))
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"), "etcd /health")
        self._spawn("kube-apiserver", self._apiserver_args(ports))
        self._wait(
            "kube-apiserver",
            lambda: self._https_ok(f"{server}/readyz", client=True),
            "kube-apiserver /readyz",
        )

        self._spawn("kube-controller-manager", self._kcm_args(ports, kubeconfigs["kube-controller-manager"]))
        self._spawn("kube-scheduler", self._scheduler_args(ports, kubeconfigs["kube-scheduler"]))
        self._spawn(
            "kwok",
            self._kwok_args(kubeconfigs["kwok"]),
            env={**os.environ, "KWOK_WORKDIR": str(self.state_dir / "kwok")},
        )

        api = self.api_client()
        try:
            apply_objects(api, simulated_objects(cfg.nodes, cfg.gpus_per_node), FIELD_MANAGER)
            self._wait(
                "kube-controller-manager",
                lambda: self._https_ok(f"https://127.0.0.1:{ports['kcm']}/healthz"),
                "kube-controller-manager /healthz",
            )
            self._wait(
                "kube-scheduler",
                lambda: self._https_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz"),
                "kube-scheduler /healthz",
            )
            self._wait(
                "kwok",
                lambda: _nodes_schedulable(api, nodes),
                f"kwok nodes {', '.join(nodes)} to be Ready and untainted",
            )
            # Pods are admitted only once the namespace's ServiceAccount exists (kcm creates it).
            self._wait(
                "kube-controller-manager",
                lambda: _exists(api, "/api/v1/namespaces/default/serviceaccounts/default"),
                "the default ServiceAccount",
            )
        finally:
            api.close()
        self.startup_seconds = time.monotonic() - t0

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._launch[name] = (argv, env)
        self.procs[name] = procs.start(name, argv, self.log(name), self.pid_dir, detach=self.detach, env=env)

    def restart(self, component: str) -> float:
        """SIGKILLs one component (etcd or kube-apiserver: a crash, not a shutdown) and starts it again with
        the same flags, ports and data; returns the seconds until it is healthy again. The other
        components reconnect on their own, as they would after a crash in a real cluster."""
        health = {
            "etcd": lambda: _http_ok(f"http://127.0.0.1:{self.state.ports['etcd']}/health"),  # type: ignore[union-attr]
            "kube-apiserver": lambda: self._https_ok(f"{self.state.server}/readyz", client=True),  # type: ignore[union-attr]
        }
        if component not in health:
            raise ValueError(f"restart supports {', '.join(health)}, not {component}")
        t0 = time.monotonic()
        procs.kill(self.procs[component])
        argv, env = self._launch[component]
        self._spawn(component, argv, env)
        self._wait(component, health[component], f"{component} healthy after a restart")
        return time.monotonic() - t0

    def _wait(self, component: str, check: Callable[[], bool], what: str) -> None:
        """Polls `check`; fails fast, with the log tail, when any started component has exited."""
        deadline = time.monotonic() + self.config.startup_timeout
        interval = 0.05
        while True:
            dead = [p for p in self.procs.values() if not p.alive()]
            if dead:
                p = dead[0]
                raise StartupError(
                    f"{p.name} exited (code {p.exit_code()}) while waiting for {what}; "
                    f"last lines of {p.log}:\n{p.tail()}"
                )
            try:
                if check():
                    return
            except Exception as exc:  # not up yet: connection refused, 404, TLS handshake on a new port
                last = exc
            else:
                last = None
            if time.monotonic() > deadline:
                proc = self.procs[component]
                raise StartupError(
                    f"timed out after {self.config.startup_timeout:g}s waiting for {what}"
                    f"{f' (last error: {last})' if last else ''}; last lines of {proc.log}:\n{proc.tail()}"
                )
            time.sleep(interval)
            interval = min(interval * 1.5, 0.3)

    # --- component flags -----------------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        return self.binaries.path(name)  # type: ignore[union-attr]

    def _etcd_args(self, ports: dict[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            self._bin("etcd"),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # A throwaway store: durability is not worth an fsync per write.
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: dict[str, int]) -> list[str]:
        pki = self.pki
        assert pki is not None
        return [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            # Loopback only; an offline host has no default route to pick an advertise address from.
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={pki.dir}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-issuer=https://127.0.0.1:{ports['apiserver']}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # Privileged pods pass the apiserver's own check, so a rejection can only come from PodSecurity
            # admission (enabled by default, like ServiceAccount, DefaultStorageClass, ResourceQuota …).
            "--allow-privileged=true",
            # On top of the defaults, as on OpenShift: setting blockOwnerDeletion needs `update` on the
            # owner's finalizers subresource, so a missing RBAC rule fails here and not only there.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            # The `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints validation rejects.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            f"--v={self.config.verbosity}",
        ]

    def _kcm_args(self, ports: dict[str, int], kubeconfig: Path) -> list[str]:
        pki = self.pki
        assert pki is not None
        return [
            self._bin("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kcm']}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--leader-elect=false",
            # Every controller (job, deployment, replicaset, garbage collector, namespace, PV binder …)
            # runs as its own ServiceAccount with the bootstrap RBAC roles, as kubeadm sets it up.
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            # In-tree host-path dynamic provisioning (still in 1.35): PVCs of the default class bind.
            "--enable-hostpath-provisioner=true",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            f"--v={self.config.verbosity}",
        ]

    def _scheduler_args(self, ports: dict[str, int], kubeconfig: Path) -> list[str]:
        pki = self.pki
        assert pki is not None
        return [
            self._bin("kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--leader-elect=false",
            f"--v={self.config.verbosity}",
        ]

    def _kwok_args(self, kubeconfig: Path) -> list[str]:
        stages = self.state_dir / "kwok" / "stages.yaml"
        stages.parent.mkdir(parents=True, exist_ok=True)
        stages.write_text("\n---\n".join(p.read_text() for p in sorted(STAGES_DIR.glob("*.yaml"))))
        return [
            self._bin("kwok"),
            f"--kubeconfig={kubeconfig}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            f"--cidr={self.config.pod_cidr}",
            # kwok renews each node's Lease; without it node-lifecycle marks the nodes NotReady after ~50s.
            "--node-lease-duration-seconds=40",
        ]

    # --- clients and checks --------------------------------------------------------------------------
    def api_client(self) -> ApiClient:
        return new_api_client(self.kubeconfig)

    def _ssl(self, client: bool) -> ssl.SSLContext:
        pki = self.pki
        assert pki is not None
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        if client:
            admin = pki.clients["admin"]
            ctx.load_cert_chain(str(admin.cert), str(admin.key))
        return ctx

    def _https_ok(self, url: str, client: bool = False) -> bool:
        return _http_ok(url, self._ssl(client))

    # --- stop ----------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stops every component (this process's, or those recorded in the state dir). Returns the names
        that had to be SIGKILLed."""
        found = {p.name: p for p in procs.load(self.pid_dir)}
        found.update(self.procs)
        pv_dirs = _hostpath_volume_dirs(self.state_dir)  # while the apiserver still answers
        order = [found[n] for n in reversed(COMPONENTS) if n in found]
        killed = procs.stop(order, self.pid_dir)
        self.procs.clear()
        _remove_hostpath_dirs(pv_dirs, self.state_dir)
        return killed


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def _exists(api: ApiClient, path: str) -> bool:
    try:
        request(api, "GET", path)
    except Exception:
        return False
    return True


def _nodes_schedulable(api: ApiClient, names: list[str]) -> bool:
    nodes = {n["metadata"]["name"]: n for n in request(api, "GET", "/api/v1/nodes")["items"]}
    for name in names:
        node: dict[str, Any] | None = nodes.get(name)
        if node is None:
            return False
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        # TaintNodesByCondition adds not-ready at creation; node-lifecycle removes it once Ready.
        if not ready or node.get("spec", {}).get("taints"):
            return False
    return True


def _hostpath_volume_dirs(state_dir: Path) -> list[Path]:
    """The directories of this cluster's host-path PVs (empty when the cluster does not answer)."""
    try:
        api = new_api_client(state_dir / "kubeconfig")
        try:
            pvs = request(api, "GET", "/api/v1/persistentvolumes", timeout=5)["items"]
        finally:
            api.close()
    except Exception:  # cluster already down or never up: nothing recorded to clean
        return []
    paths = [Path((pv.get("spec", {}).get("hostPath") or {}).get("path", "/")) for pv in pvs]
    return [p for p in paths if p.parent == HOSTPATH_PV_ROOT]


def _remove_hostpath_dirs(pv_dirs: list[Path], state_dir: Path) -> None:
    """Removes this cluster's PV directories, plus empty ones created while it ran: the provisioner can
    leave one behind when it provisions a claim twice under load. Nothing mounts them (kwok runs no
    containers), and kcm's deleter ignores a directory that is already gone, so a concurrent cluster's
    empty directory is safe to remove too."""
    for path in pv_dirs:
        shutil.rmtree(path, ignore_errors=True)
    try:
        since = ClusterState.load(state_dir).started_at
        candidates = list(HOSTPATH_PV_ROOT.iterdir()) if since else []
    except (OSError, ValueError, TypeError):
        return
    for path in candidates:
        try:
            if path.is_dir() and path.stat().st_mtime >= since and not any(path.iterdir()):
                path.rmdir()
        except OSError:
            pass
