"""`make demo`: the operator on the embedded control plane, end to end.

1. Start the control plane (kwok GPU nodes), install the CRDs, run `speculators-operator`.
2. `kubectl apply -f examples/` (hub models; kwok completes the pods, nothing really runs; not the
   SpeculatorBenchmark, which needs a serving vLLM: tests/bench runs its Job's commands for real).
3. examples/local/tiny-eagle3.yaml (and tiny-dflash.yaml, a DFlash draft of the same verifier): a real
   pipeline on CPU. A tiny verifier trained here sits on a PVC;
   the operator's Jobs (prepare-data, datagen shards, train, eval) are executed on this machine by the
   stand-in kubelet (localrun) and report real termination messages; the trained draft is deployed
   and a vLLM /metrics stand-in on the pod's IP feeds live acceptance into the Speculator's status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from localrun import vllm_standin

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".work" / "demo"
LOCAL_NS = "demo"
HUB_NS = "demo-hub"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def kubectl(*args: str, check: bool = True, capture: bool = False) -> str:
    result = subprocess.run(["kubectl", *args], check=check, text=True, capture_output=capture)
    return result.stdout if capture else ""


def get_json(*args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json", capture=True))


def wait_until(what: str, predicate, timeout: float, show: tuple[str, ...] = ()) -> Any:
    """Poll `predicate` (returns a truthy value when done); print the table when it changes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if show:
            table = kubectl("get", *show, check=False, capture=True)
            # The AGE column changes every poll; print only when something else changed.
            key = [line.rsplit(None, 1)[0] for line in table.splitlines() if line.strip()]
            if key != last:
                print(table, end="", flush=True)
                last = key
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def status_of(kind: str, name: str, ns: str) -> dict[str, Any]:
    found = kubectl("get", kind, name, "-n", ns, "-o", "json", check=False, capture=True)
    return (json.loads(found).get("status") or {}) if found else {}


def phase(kind: str, name: str, ns: str) -> str:
    return status_of(kind, name, ns).get("phase", "")


def pvc_host_path(claim: str, ns: str) -> Path:
    """Where kube-controller-manager's host-path provisioner put the claim's volume on this machine."""
    pv = get_json("pvc", claim, "-n", ns)["spec"]["volumeName"]
    return Path(get_json("pv", pv)["spec"]["hostPath"]["path"])


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _settled(status: dict[str, Any]) -> bool:
    """Tuned is Stable and the acceptance window holds only the pod of the settled k (old-k pods aged out)."""
    acceptance, tuning = status.get("acceptance") or {}, status.get("tuning") or {}
    stable = any(c["type"] == "Tuned" and c["reason"] == "Stable" for c in status.get("conditions", []))
    if not (stable and acceptance.get("drafts") and acceptance.get("pods") == 1):
        return False
    changed = tuning.get("lastChangeTime")
    return not changed or _epoch(acceptance.get("lastScrapeTime") or changed) > _epoch(changed)


class _Stopper:
    """Stops the stand-in fleet with the demo's other servers."""

    def __init__(self, stop: threading.Event, fleet: vllm_standin.Fleet) -> None:
        self.stop, self.fleet = stop, fleet

    def shutdown(self) -> None:
        self.stop.set()
        self.fleet.close()


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    shutil.rmtree(STATE / "localrun", ignore_errors=True)
    STATE.mkdir(parents=True, exist_ok=True)
    cluster_dir = STATE / "cluster"
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack")}
    down = [py, "-m", "kubecluster", "down", "--state-dir", str(cluster_dir)]
    subprocess.run(down, env=env, capture_output=True)

    say("1. Control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok GPU nodes")
    up = subprocess.run(
        [py, "-m", "kubecluster", "up", "--state-dir", str(cluster_dir)],
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    )
    os.environ["KUBECONFIG"] = up.stdout.strip().split("=", 1)[1].strip("'")
    env["KUBECONFIG"] = os.environ["KUBECONFIG"]
    children: list[subprocess.Popen] = []
    servers: list[Any] = []

    def cleanup(*_: Any) -> None:
        for server in servers:
            server.shutdown()
        for proc in children:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        if not keep:
            subprocess.run(down, env=env)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        kubectl("get", "nodes", "-L", "nvidia.com/gpu.present")
        say("2. CRDs and the operator")
        kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        operator = start(
            [str(Path(py).parent / "speculators-operator"), "--metrics-port", "0", "--liveness", "off"],
            STATE / "operator.log",
            env,
        )
        children.append(operator)
        print(f"speculators-operator running (pid {operator.pid}, log {STATE / 'operator.log'})")

        say(f"3. kubectl apply -f examples/  (namespace {HUB_NS}; hub models, kwok completes the pods)")
        kubectl("create", "namespace", HUB_NS)
        # The SpeculatorBenchmark example needs a serving vLLM and GuideLLM: on kwok nothing serves, so it
        # could only fail for want of results. tests/bench runs that Job's commands for real instead.
        for path in sorted((REPO / "examples").glob("*.yaml")):
            if not path.name.startswith("speculatorbenchmark-"):
                kubectl("apply", "-n", HUB_NS, "-f", str(path))
        wait_until(
            "the hub examples",
            lambda: (
                phase("speculatortraining", "llama3-8b-eagle3", HUB_NS) == "Succeeded"
                and phase("speculator", "llama3-8b-redhat-eagle3", HUB_NS) == "Running"
            ),
            timeout=180,
            show=("speculatortrainings,speculators", "-n", HUB_NS),
        )

        say("4. A real pipeline on CPU: tiny verifier (trained here) -> prepare -> datagen -> train -> eval")
        from speculators_core.testing.verifier import build_tiny_stack

        stack = build_tiny_stack()
        layers = stack.info["spec"]["num_layers"]
        print(f"tiny verifier: {layers} layers, vocab {stack.info['vocab_size']} ({stack.verifier})")
        kubectl("create", "namespace", LOCAL_NS)
        kubectl("label", "namespace", LOCAL_NS, "pod-security.kubernetes.io/enforce=restricted")
        example = REPO / "examples" / "local" / "tiny-eagle3.yaml"
        kubectl("apply", "-n", LOCAL_NS, "-f", str(example))
        # A DFlash draft of the same verifier on the same data, trained alongside.
        kubectl("apply", "-n", LOCAL_NS, "-f", str(REPO / "examples" / "local" / "tiny-dflash.yaml"))
        bound = "--for=jsonpath={.status.phase}=Bound"
        kubectl("wait", "-n", LOCAL_NS, bound, "pvc/demo-models", "--timeout=60s")
        models = pvc_host_path("demo-models", LOCAL_NS)
        shutil.copytree(stack.verifier, models / "verifier", dirs_exist_ok=True)
        (models / "data").mkdir(exist_ok=True)
        shutil.copy(stack.train_data, models / "data" / "train.jsonl")
        print(f"verifier and data copied onto PVC demo-models ({models})")
        children.append(
            start(
                [py, "-m", "localrun", "--namespace", LOCAL_NS, "--state-dir", str(STATE / "localrun")],
                STATE / "localrun.log",
                env,
            )
        )
        print(f"stand-in kubelet running the held Job pods (log {STATE / 'localrun.log'})")
        final = wait_until(
            "tiny-eagle3 to finish training",
            lambda: (
                phase("speculatortraining", "tiny-eagle3", LOCAL_NS) in ("Succeeded", "Failed")
                and phase("speculatortraining", "tiny-eagle3", LOCAL_NS)
            ),
            timeout=1800,
            show=("speculatortrainings", "-n", LOCAL_NS),
        )
        training = get_json("speculatortraining", "tiny-eagle3", "-n", LOCAL_NS)
        print(
            json.dumps({k: training["status"].get(k) for k in ("metrics", "evaluation", "output")}, indent=1)
        )
        if final != "Succeeded":
            print(f"training failed; pod logs in {STATE / 'localrun' / 'logs'}", file=sys.stderr)
            return 1

        say("5. Serving the trained draft: Deployment on a kwok GPU node + live acceptance in status")
        wait_until(
            "the Speculator's pod",
            lambda: phase("speculator", "tiny-eagle3", LOCAL_NS) == "Running",
            timeout=120,
            show=("speculators", "-n", LOCAL_NS),
        )
        evaluation = training["status"]["evaluation"]
        promotion = training["status"].get("promotion") or {}
        print(f"promotion gate: {promotion.get('reason')}: {promotion.get('message')}")
        # The stand-in vLLM servers replay the offline evaluation's per-position rates and cost ratio, each
        # drafting the k of its own pod's command line, so automatic k is seen choosing and rolling.
        scenario = vllm_standin.Scenario(
            conditional=evaluation.get("conditionalAcceptance") or [0.5],
            cost_ratio=float(evaluation.get("draftCostRatio") or 0.05),
        )
        fleet = vllm_standin.Fleet(
            lambda: get_json("pods", "-n", LOCAL_NS, "-l", "speculators.ai/speculator=tiny-eagle3")["items"],
            scenario,
            8000,
            "tiny-eagle3",
        )
        stop = threading.Event()
        threading.Thread(target=fleet.run, args=(stop,), daemon=True).start()
        servers.append(_Stopper(stop, fleet))
        print(f"vLLM /metrics stand-ins on the pods' IPs (conditional rates {scenario.conditional})")
        wait_until(
            "a settled k, and a window of acceptance measured at it alone",
            lambda: _settled(status_of("speculator", "tiny-eagle3", LOCAL_NS)),
            timeout=240,
            show=("speculators", "-n", LOCAL_NS),
        )
        tuning = status_of("speculator", "tiny-eagle3", LOCAL_NS).get("tuning") or {}
        print(
            f"automatic k: k={tuning.get('numSpeculativeTokens')} after {tuning.get('changes')} change(s); "
            f"last: {tuning.get('lastChange') or '-'}; cost ratio {tuning.get('costRatio')} "
            f"({tuning.get('costRatioSource')})"
        )
        say("6. The DFlash draft: a block of 7 drafts per verifier step, evaluated the same way")
        dflash = wait_until(
            "tiny-dflash to finish training",
            lambda: (
                phase("speculatortraining", "tiny-dflash", LOCAL_NS) in ("Succeeded", "Failed")
                and phase("speculatortraining", "tiny-dflash", LOCAL_NS)
            ),
            timeout=1800,
            show=("speculatortrainings", "-n", LOCAL_NS),
        )
        if dflash != "Succeeded":
            print(f"tiny-dflash failed; pod logs in {STATE / 'localrun' / 'logs'}", file=sys.stderr)
            return 1
        dflash_eval = status_of("speculatortraining", "tiny-dflash", LOCAL_NS).get("evaluation") or {}
        eagle = f"{evaluation.get('meanAcceptanceLength')} at k={evaluation.get('numSpeculativeTokens')}"
        print(
            f"DFlash: mean acceptance length {dflash_eval.get('meanAcceptanceLength')} at k="
            f"{dflash_eval.get('numSpeculativeTokens')} (EAGLE-3: {eagle})"
        )
        say("7. Result")
        kubectl("get", "speculatortrainings,speculators", "-A")
        output = training["status"]["output"]["uri"]  # pvc://<claim>/tiny-eagle3/model
        claim, path = output[len("pvc://") :].split("/", 1)
        model_dir = pvc_host_path(claim, LOCAL_NS) / path
        subprocess.run([str(Path(py).parent / "speculators"), "inspect", str(model_dir)], check=True)
        if keep:
            print(f"\nKEEP=1: cluster left running; export KUBECONFIG={os.environ['KUBECONFIG']}")
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
