"""The operator at fleet scale: N Speculators and M SpeculatorTrainings on the embedded control plane.

The real kube-apiserver, etcd, controller-manager and scheduler, kwok GPU nodes (pods become Running and
Ready, no containers), the real `speculators-operator` process (namespace-scoped). Live metrics come from a
Prometheus stand-in (one HTTP server answering the operator's per-namespace PromQL with a series for every
pod of the namespace, its pod list refreshed from the API server every 5 s: 12 LIST pods a minute of the
benchmark's own; the numbers change every query, as a busy fleet's do), so the metrics loop, the status
writes and the reconciles run as in production; the training pods are held Running (kwok), so the
trainings stay in their first step.

Measures:
- apply -> first child created (Speculator: its Deployment; training: its prepare Job), per CR, p50/p99,
  from a watch on the children (times are this process's clock at create and at the watch event): for
  the burst that fills the fleet (all CRs created at once by 8 threads: a queueing figure, bounded by how
  fast the control plane on this machine takes the writes), and for `--probes` Speculators applied one
  at a time (every 2 s) into the running fleet after the steady state: the operator's reaction time at
  that size (`fleet_apply_to_deployment_*`);
- time from the first create to all Speculators Ready (kwok pods ready) and every training started;
- steady state over `--steady-seconds` with metrics scraping: operator CPU (cores) and RSS (MB, max), API
  requests per minute by verb and resource (the API server's own apiserver_request_total, all clients;
  ours are the speculators.ai rows) and status writes per Speculator per metrics window.

With `--replicas 2`: two operator processes with Kopf peering (priorities 10 and 0); the steady-state
figures are the active replica's (and the standby's CPU/RSS), then the active one is SIGKILLed and a new
Speculator is created at once: `failover_resume_s` is the time until the standby has created its
Deployment (the peering lifetime, `--peering-lifetime`, 60 s by default, decides most of it: a dead peer
counts as alive until then).

Side by side in the same run (unless `--no-floor`), the floor: the same burst in a namespace of its own
with no operator; as each CR is created, its first children (what the operator's own derive functions
plan for a new object) are queued to a pool with as many threads as the operator's runner has workers,
which creates and applies them. That is a controller with no watch delay, no reads, no status writes and
no events, in front of the same downstream work (Job and Deployment controllers, scheduler, kwok): its
apply -> child is what the control plane on this machine allows for this burst at that concurrency.

Targets (issue 15): p50 < 0.5 s, p99 < 2 s, <= 1 status write per CR per window, RSS < 300 MB.
Prints one JSON line. Usage: .venv/bin/python benchmarks/operator_scale.py [--speculators 1000]
[--trainings 100] [--steady-seconds 600] [--replicas 2] (needs the control plane: make control-plane).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "hack"), str(REPO / "operator"), str(REPO)]

from kubernetes import client, watch  # noqa: E402

from kubecluster.cluster import ClusterConfig, EmbeddedCluster  # noqa: E402
from kubecluster.manifests import install_crds  # noqa: E402
from kubecluster.procs import free_port  # noqa: E402

NS = "scale"
RECONCILE_WORKERS = 16  # speculators_operator.handlers.runner.WORKERS
FLOOR_NS = "scale-floor"
GROUP, VERSION = "speculators.ai", "v1alpha1"
WORK = REPO / ".work" / "bench" / "scale"


class PrometheusStandIn(http.server.ThreadingHTTPServer):
    """Answers /api/v1/query with the acceptance counters of a busy fleet, different on every query: one
    series per pod of the fleet's namespace (the operator asks `sum by (pod)` per namespace)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.queries = 0
        self.pods: list[str] = []  # refreshed from the API server by the benchmark (follow_pods)


def follow_pods(api: client.ApiClient, prom: PrometheusStandIn, stop: threading.Event) -> None:
    """Keep the stand-in's pod list current (every 5 s), as Prometheus' discovery would."""
    core = client.CoreV1Api(api)
    while not stop.wait(5.0):
        try:
            prom.pods = [p.metadata.name for p in core.list_namespaced_pod(NS).items]
        except Exception:  # the API server is busy: keep the last list
            continue


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PrometheusStandIn

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        self.server.queries += 1
        tick = self.server.queries % 17  # traffic moves: the numbers change from scrape to scrape
        drafts = 1000.0 + 10 * tick
        now = time.time()
        result: list[dict[str, Any]] = []
        for pod in self.server.pods:
            if "by (pod, position)" in query:
                result += [
                    {"metric": {"pod": pod, "position": str(i)}, "value": [now, str(drafts * p)]}
                    for i, p in enumerate((0.8, 0.6, 0.45))
                ]
            else:
                value = {"drafts": drafts, "tokens": 3 * drafts, "accepted": 1.85 * drafts}
                key = "tokens" if "draft_tokens" in query else "accepted" if "accepted" in query else "drafts"
                result.append({"metric": {"pod": pod}, "value": [now, str(value[key])]})
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def speculator(i: int, prometheus: str, interval: int, window: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Speculator",
        "metadata": {"name": f"spd-{i:04d}"},
        "spec": {
            "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "draft": {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
            "method": "eagle3",
            "numSpeculativeTokens": 3,
            "resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "10m", "memory": "16Mi"}},
            "metrics": {
                "source": "prometheus",
                "prometheusUrl": prometheus,
                "intervalSeconds": interval,
                "windowSeconds": window,
            },
        },
    }


def training(i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpeculatorTraining",
        "metadata": {"name": f"train-{i:03d}"},
        "spec": {
            "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "data": {"datasets": [{"uri": "hf://HuggingFaceH4/ultrachat_200k"}]},
            "output": {"pvc": {"size": "1Gi"}},
            "podMetadata": {"annotations": {"sim.speculators.ai/hold": "true"}},
        },
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class ChildWatch:
    """First time each owner's child (Deployment, Job) is seen, on this process's clock."""

    def __init__(self, api: client.ApiClient, namespace: str = NS) -> None:
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(fn,), daemon=True)
            for fn in (
                client.AppsV1Api(api).list_namespaced_deployment,
                client.BatchV1Api(api).list_namespaced_job,
            )
        ]
        for t in self.threads:
            t.start()

    def _run(self, list_fn: Any) -> None:
        w = watch.Watch()
        while not self.stop.is_set():
            try:
                for event in w.stream(list_fn, self.namespace, timeout_seconds=30, _request_timeout=40):
                    meta = event["object"].metadata
                    for ref in meta.owner_references or []:
                        self.seen.setdefault(ref.name, time.monotonic())
                    if self.stop.is_set():
                        break
            except Exception:  # the watch ended (the API server closed it, or the run is over): watch again
                continue


def apiserver_requests(api: client.ApiClient) -> dict[tuple[str, str, str], float]:
    """apiserver_request_total summed by (verb, resource, subresource), from the API server's /metrics."""
    req = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    resp = api.call_api(*req)
    resp.read()
    text = resp.data.decode()
    out: dict[tuple[str, str, str], float] = {}
    for line in str(text).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = next(
        int(x.split()[1])
        for x in Path(f"/proc/{pid}/status").read_text().splitlines()
        if x.startswith("VmRSS")
    )
    return cpu, rss / 1024


def wait_alive(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll the operator's liveness endpoint: created objects then meet a running operator."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {proc.returncode}; see {WORK / 'operator.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the operator did not answer {url}")


def ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speculators", type=int, default=1000)
    ap.add_argument("--trainings", type=int, default=100)
    ap.add_argument("--steady-seconds", type=int, default=600)
    ap.add_argument("--interval", type=int, default=30, help="metrics.intervalSeconds")
    ap.add_argument("--window", type=int, default=120, help="metrics.windowSeconds")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--replicas", type=int, choices=(1, 2), default=1, help="2: peering, then a failover")
    ap.add_argument("--peering-lifetime", type=int, default=60, help="the replicas' --peering-lifetime")
    ap.add_argument("--probes", type=int, default=30, help="Speculators applied one by one into the fleet")
    ap.add_argument("--no-floor", action="store_true", help="skip the no-operator floor run")
    args = ap.parse_args()

    # GPU nodes for the fleet, and as many again for the floor's (its pods stay Running).
    nodes = max(4, (1 if args.no_floor else 2) * -(-(args.speculators + args.probes + 1) // 8) + 2)
    WORK.mkdir(parents=True, exist_ok=True)
    prom = PrometheusStandIn()
    threading.Thread(target=prom.serve_forever, daemon=True).start()
    prom_url = f"http://127.0.0.1:{prom.server_address[1]}"
    with EmbeddedCluster(WORK / "cluster", ClusterConfig(nodes=nodes, gpus_per_node=8)) as cluster:
        api = cluster.api_client()
        install_crds(api, sorted((REPO / "crds").glob("*.yaml")))
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        custom = client.CustomObjectsApi(api)
        pods_stop = threading.Event()
        threading.Thread(target=follow_pods, args=(api, prom, pods_stop), daemon=True).start()
        floor = None if args.no_floor else _floor(api, custom, prom_url, args)
        peering: list[str] = []
        if args.replicas == 2:
            install_crds(api, sorted((REPO / "crds").glob("kopf.dev_*.yaml")))
            body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speculators"}}
            custom.create_namespaced_custom_object("kopf.dev", "v1", NS, "kopfpeerings", body)
            peering = ["--peering", "speculators", "--peering-lifetime", str(args.peering_lifetime)]
        operators: list[subprocess.Popen[bytes]] = []
        try:
            # The active replica first (priority 10), then the standby (0), which pauses for it.
            for i in range(args.replicas):
                extra = [*peering, "--priority", "10" if i == 0 else "0"] if peering else []
                operators.append(start_operator(cluster.kubeconfig, extra, WORK / f"operator-{i}.log"))
            return _run(args, api, custom, operators, prom, prom_url, floor)
        finally:
            for operator in operators:
                if operator.poll() is None:
                    operator.terminate()
                    operator.wait(30)
            pods_stop.set()
            prom.shutdown()


def start_operator(kubeconfig: Path, extra: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    liveness = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    env["POD_ID"] = log_path.stem  # the peer identity Kopf records
    log = log_path.open("wb")
    operator = subprocess.Popen(
        [sys.executable, "-m", "speculators_operator", "--namespace", NS, "--metrics-port", "0",
         "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--log-level", "WARNING", *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_alive(f"http://127.0.0.1:{liveness}/healthz", operator)
    return operator


def _run(
    args: argparse.Namespace,
    api: client.ApiClient,
    custom: client.CustomObjectsApi,
    operators: list[subprocess.Popen[bytes]],
    prom: PrometheusStandIn,
    prom_url: str,
    floor: dict[str, Any] | None,
) -> int:
    operator, standby = operators[0], (operators[1] if len(operators) > 1 else None)
    children = ChildWatch(api)
    created: dict[str, float] = {}
    objects = [speculator(i, prom_url, args.interval, args.window) for i in range(args.speculators)]
    objects += [training(i) for i in range(args.trainings)]

    def create(obj: dict[str, Any]) -> None:
        plural = "speculators" if obj["kind"] == "Speculator" else "speculatortrainings"
        t = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, obj)
        created[obj["metadata"]["name"]] = t

    burst0 = apiserver_requests(api)
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, objects))
    applied = time.monotonic() - start

    deadline = start + args.timeout
    all_ready = None
    while time.monotonic() < deadline:
        spds = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "speculators")["items"]
        trs = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "speculatortrainings")["items"]
        n_ready = sum(ready(o) for o in spds)
        n_started = sum((o.get("status") or {}).get("phase") not in (None, "Failed") for o in trs)
        if n_ready == args.speculators and n_started == args.trainings and len(children.seen) >= len(objects):
            all_ready = time.monotonic() - start
            break
        time.sleep(2)
    burst1 = apiserver_requests(api)
    # API requests per CR from the first create to all ready (all clients: the control plane's too).
    burst_requests = {
        f"{verb} {resource}{'/' + sub if sub else ''}": round((n - burst0.get(k, 0.0)) / len(objects), 2)
        for k, n in sorted(burst1.items(), key=lambda kv: -(kv[1] - burst0.get(kv[0], 0.0)))[:16]
        for verb, resource, sub in [k]
    }
    latencies = [children.seen[n] - t for n, t in created.items() if n in children.seen]
    spd_lat = [
        children.seen[n] - t for n, t in created.items() if n.startswith("spd-") and n in children.seen
    ]
    tr_lat = [
        children.seen[n] - t for n, t in created.items() if n.startswith("train-") and n in children.seen
    ]

    # Steady state: scraping, status writes, API traffic.
    before = apiserver_requests(api)
    queries0 = prom.queries
    cpu0, rss0 = proc_sample(operator.pid)
    standby0 = proc_sample(standby.pid) if standby else (0.0, 0.0)
    rss_max = rss0
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.steady_seconds:
        time.sleep(5)
        _, rss = proc_sample(operator.pid)
        rss_max = max(rss_max, rss)
    elapsed = time.monotonic() - t0
    cpu1, rss1 = proc_sample(operator.pid)
    standby1 = proc_sample(standby.pid) if standby else (0.0, 0.0)
    after = apiserver_requests(api)
    probe_lat = _probes(custom, children, prom_url, args)
    failover = _failover(operator, custom, children, prom_url, args) if standby else None
    children.stop.set()
    per_minute = {
        f"{verb} {resource}{'/' + sub if sub else ''}": round(
            (after[k] - before.get(k, 0.0)) * 60 / elapsed, 1
        )
        for k in after
        for verb, resource, sub in [k]
        if after[k] - before.get(k, 0.0) > 0
    }
    status_writes = sum(
        after[k] - before.get(k, 0.0)
        for k in after
        if k[1] == "speculators" and k[2] == "status" and k[0] in ("PATCH", "UPDATE", "APPLY")
    )
    windows = elapsed / args.window
    ours = {k: v for k, v in sorted(per_minute.items(), key=lambda kv: -kv[1]) if "speculator" in k}
    others = dict(
        sorted(((k, v) for k, v in per_minute.items() if "speculator" not in k), key=lambda kv: -kv[1])[:12]
    )
    result = {
        "benchmark": "operator_scale",
        "speculators": args.speculators,
        "trainings": args.trainings,
        "create_seconds": round(applied, 1),
        "apply_to_child_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "apply_to_child_p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
        "speculator_apply_to_deployment_p50_s": round(statistics.median(spd_lat), 3) if spd_lat else None,
        "speculator_apply_to_deployment_p99_s": round(pct(spd_lat, 0.99), 3) if spd_lat else None,
        "training_apply_to_job_p50_s": round(statistics.median(tr_lat), 3) if tr_lat else None,
        "training_apply_to_job_p99_s": round(pct(tr_lat, 0.99), 3) if tr_lat else None,
        **(floor or {}),
        "fleet_apply_to_deployment_p50_s": round(statistics.median(probe_lat), 3) if probe_lat else None,
        "fleet_apply_to_deployment_max_s": round(max(probe_lat), 3) if probe_lat else None,
        "fleet_probes": len(probe_lat),
        "children_seen": len(children.seen),
        "burst_api_requests_per_cr": burst_requests,
        "time_to_all_ready_s": round(all_ready, 1) if all_ready else None,
        "steady_seconds": round(elapsed),
        "metrics_interval_s": args.interval,
        "metrics_window_s": args.window,
        "operator_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
        "operator_rss_mb": round(rss1, 1),
        "operator_rss_max_mb": round(rss_max, 1),
        "status_writes_per_speculator_per_window": round(
            status_writes / max(args.speculators, 1) / windows, 3
        ),
        "prometheus_queries_per_minute": round((prom.queries - queries0) * 60 / elapsed, 1),
        "api_requests_per_minute_ours": ours,
        "api_requests_per_minute_top_others": others,
        "replicas": len(operators),
        **(
            {
                "standby_cpu_cores": round((standby1[0] - standby0[0]) / elapsed, 3),
                "standby_rss_mb": round(standby1[1], 1),
                "failover_resume_s": failover,
            }
            if standby
            else {}
        ),
        "targets": {"p50_s": 0.5, "p99_s": 2.0, "status_writes_per_window": 1, "rss_mb": 300},
    }
    print(json.dumps(result))
    return 0


def _floor(
    api: client.ApiClient, custom: client.CustomObjectsApi, prom_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The burst with an instant, free controller (see the module docstring)."""
    from speculators_operator.kube import Kube
    from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator
    from speculators_operator.status.training import TrainingObserved, derive_training

    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": FLOOR_NS}})
    kube = Kube(api)
    children = ChildWatch(api, FLOOR_NS)
    created: dict[str, float] = {}
    objects = [speculator(i, prom_url, args.interval, args.window) for i in range(args.speculators)]
    objects += [training(i) for i in range(args.trainings)]

    def children_of(body: dict[str, Any]) -> None:
        plan = (
            derive_speculator(body, SpeculatorObserved())
            if body["kind"] == "Speculator"
            else derive_training(body, TrainingObserved())
        )
        for child in plan.create:
            kube.create(child)
        for child in plan.apply:
            kube.apply(child)

    controller = ThreadPoolExecutor(RECONCILE_WORKERS)  # as many in flight as the operator's runner

    def create(obj: dict[str, Any]) -> None:
        plural = "speculators" if obj["kind"] == "Speculator" else "speculatortrainings"
        t = time.monotonic()
        body = custom.create_namespaced_custom_object(GROUP, VERSION, FLOOR_NS, plural, obj)
        created[obj["metadata"]["name"]] = t
        controller.submit(children_of, body)

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, objects))
    controller.shutdown(wait=True)
    deadline = start + args.timeout
    while len(children.seen) < len(objects) and time.monotonic() < deadline:
        time.sleep(0.5)
    children.stop.set()
    latencies = [children.seen[n] - t for n, t in created.items() if n in children.seen]
    # Left in place, idle (no operator watches it; its pods are held Running): deleting 1000s of objects
    # would load the control plane during the operator's run, and waiting for it takes many minutes.
    return {
        "floor_apply_to_child_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "floor_apply_to_child_p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
        "floor_seconds": round(time.monotonic() - start, 1),
    }


def _probes(
    custom: client.CustomObjectsApi, children: ChildWatch, prom_url: str, args: argparse.Namespace
) -> list[float]:
    """Apply `--probes` more Speculators one at a time (2 s apart) into the running fleet: apply ->
    Deployment of each (a probe whose Deployment is not seen within 60 s counts as 60 s)."""
    out = []
    for i in range(args.probes):
        obj = speculator(args.speculators + 1 + i, prom_url, args.interval, args.window)
        name = obj["metadata"]["name"]
        t = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "speculators", obj)
        while name not in children.seen and time.monotonic() - t < 60:
            time.sleep(0.01)
        out.append(children.seen.get(name, t + 60) - t)
        time.sleep(max(0.0, 2 - (time.monotonic() - t)))
    return out


def _failover(
    active: subprocess.Popen[bytes],
    custom: client.CustomObjectsApi,
    children: ChildWatch,
    prom_url: str,
    args: argparse.Namespace,
) -> float | None:
    """SIGKILL the active replica and create a Speculator at once: seconds until the standby has created
    its Deployment (None: not within --timeout)."""
    active.kill()
    active.wait(30)
    obj = speculator(args.speculators, prom_url, args.interval, args.window)
    name = obj["metadata"]["name"]
    t = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "speculators", obj)
    deadline = t + args.timeout
    while time.monotonic() < deadline:
        if name in children.seen:
            return round(children.seen[name] - t, 1)
        time.sleep(0.2)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
