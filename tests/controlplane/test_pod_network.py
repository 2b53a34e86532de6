"""Pod IPs are reachable from the test process: the embedded cluster hands out loopback addresses (kwok
--cidr inside 127.0.0.0/8, which Linux routes to lo), so a test can serve a pod's HTTP endpoint itself and
code that scrapes http://<podIP>:<port>/metrics reaches it unchanged."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness import KubeApi, TestCluster, pod, restricted_container, wait_for

pytestmark = pytest.mark.kwok
METRICS = (
    b'# TYPE vllm:spec_decode_num_drafts counter\nvllm:spec_decode_num_drafts_total{model_name="m"} 42.0\n'
)


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = METRICS if self.path == "/metrics" else b"not found\n"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@contextmanager
def serve(ip: str, port: int) -> Iterator[None]:
    """The stand-in for the pod's container: an HTTP server on the pod's own IP and port."""
    server = ThreadingHTTPServer((ip, port), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_pod_ip_serves_http_to_the_test_process(
    kube_api: KubeApi, namespace: str, cluster: TestCluster
) -> None:
    port = {"containerPort": 8000, "name": "http"}
    for name in ("vllm-a", "vllm-b"):
        kube_api.create(pod(name, containers=[restricted_container(ports=[port])]), namespace)
    ips = [
        wait_for(
            lambda n=name: kube_api.get("v1", "Pod", n, namespace),
            lambda p: p["status"].get("phase") == "Running" and p["status"].get("podIP"),
            what=f"pod {name} to run with an IP",
        )["status"]["podIP"]
        for name in ("vllm-a", "vllm-b")
    ]
    assert ips[0] != ips[1]
    assert cluster.pod_cidr, "a simulated cluster records its pod CIDR"
    for ip in ips:
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(cluster.pod_cidr)
        assert ipaddress.ip_address(ip).is_loopback

    with serve(ips[0], 8000):
        resp = httpx.get(f"http://{ips[0]}:8000/metrics", timeout=5)
        assert resp.status_code == 200
        assert resp.content == METRICS
        # Each pod IP is its own endpoint: nothing answers on the other pod's address.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{ips[1]}:8000/metrics", timeout=5)
