"""Watch held Job pods and run them locally (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

HOLD = "sim.speculators.ai/hold"
OUTCOME = "sim.speculators.ai/outcome"
EXIT_CODE = "sim.speculators.ai/exit-code"
MESSAGE = "sim.speculators.ai/termination-message"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
MESSAGE_LIMIT = 4096  # what a kubelet keeps of a termination message


class PodSetupError(Exception):
    """The pod uses something this stand-in cannot provide locally."""


@dataclass
class LocalPod:
    """One pod's volumes mapped to local directories."""

    pod: Any
    workdir: Path
    volumes: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.pod.metadata.name


def pv_host_path(core: client.CoreV1Api, namespace: str, claim: str) -> Path:
    pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
    if not pvc.spec.volume_name:
        raise PodSetupError(f"PVC {claim} is not bound")
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    if not pv.spec.host_path:
        raise PodSetupError(f"PV {pv.metadata.name} of PVC {claim} is not a hostPath volume")
    return Path(pv.spec.host_path.path)


def map_volumes(core: client.CoreV1Api, pod: Any, root: Path) -> LocalPod:
    local = LocalPod(pod=pod, workdir=root / pod.metadata.uid)
    for volume in pod.spec.volumes or []:
        if volume.persistent_volume_claim:
            local.volumes[volume.name] = pv_host_path(
                core, pod.metadata.namespace, volume.persistent_volume_claim.claim_name
            )
        elif volume.empty_dir is not None:
            path = local.workdir / "volumes" / volume.name
            path.mkdir(parents=True, exist_ok=True)
            local.volumes[volume.name] = path
        elif volume.projected or volume.secret or volume.config_map:
            continue  # service-account tokens and the like: the CLI does not read them
        else:
            raise PodSetupError(f"volume {volume.name}: only PVCs and emptyDirs run locally")
    return local


def mount_table(local: LocalPod, container: Any) -> list[tuple[str, Path]]:
    """(mountPath, local dir) pairs, longest mount path first so nested mounts win."""
    table = []
    for mount in container.volume_mounts or []:
        if mount.name not in local.volumes:
            continue
        path = local.volumes[mount.name] / (mount.sub_path or "")
        path.mkdir(parents=True, exist_ok=True)
        table.append((mount.mount_path.rstrip("/"), path))
    return sorted(table, key=lambda item: len(item[0]), reverse=True)


def rewrite(value: str, table: list[tuple[str, Path]], termination_log: Path) -> str:
    if value == "/dev/termination-log":
        return str(termination_log)
    for mount_path, local in table:
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path) :]
    return value


def container_env(pod: Any, container: Any, table: list[tuple[str, Path]], log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    annotations = pod.metadata.annotations or {}
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = rewrite(var.value, table, log)
        elif var.value_from and var.value_from.field_ref:
            field_path = var.value_from.field_ref.field_path
            if COMPLETION_INDEX in field_path:
                env[var.name] = annotations.get(COMPLETION_INDEX, "0")
            elif field_path == "metadata.name":
                env[var.name] = pod.metadata.name
            elif field_path == "metadata.namespace":
                env[var.name] = pod.metadata.namespace
        # Secrets are not read by this stand-in: the demo uses none.
    return env


def resolve_executable(name: str, venv_bin: Path) -> str:
    candidate = venv_bin / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise PodSetupError(f"command {name!r} is neither in {venv_bin} nor on PATH")
    return found


def run_container(local: LocalPod, container: Any, venv_bin: Path, logs: Path) -> tuple[int, str]:
    termination_log = local.workdir / f"{container.name}.termination-log"
    termination_log.parent.mkdir(parents=True, exist_ok=True)
    termination_log.write_text("")
    table = mount_table(local, container)
    argv = [rewrite(a, table, termination_log) for a in [*(container.command or []), *(container.args or [])]]
    if not argv:
        raise PodSetupError(f"container {container.name} has no command (images are not run locally)")
    argv[0] = resolve_executable(argv[0], venv_bin)
    env = container_env(local.pod, container, table, termination_log)
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    log_path = logs / f"{local.name}.{container.name}.log"
    with log_path.open("w") as log:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        rc = subprocess.call(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=local.workdir)
    message = termination_log.read_text()
    if not message and rc != 0 and container.termination_message_policy == "FallbackToLogsOnError":
        message = log_path.read_text()[-MESSAGE_LIMIT:]
    return rc, message[-MESSAGE_LIMIT:]


def run_pod(core: client.CoreV1Api, pod: Any, root: Path, venv_bin: Path, logs: Path) -> dict[str, str]:
    """Run init containers then containers; the first failure ends the pod like a kubelet would."""
    try:
        local = map_volumes(core, pod, root)
        rc, message = 0, ""
        for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
            rc, message = run_container(local, container, venv_bin, logs)
            if rc != 0:
                break
    except PodSetupError as exc:
        rc, message = 1, f"localrun: {exc}"
    return {
        HOLD: "false",
        OUTCOME: "succeed" if rc == 0 else "fail",
        EXIT_CODE: str(rc if rc != 0 else 0),
        MESSAGE: message,
    }


def held_pods(core: client.CoreV1Api, namespace: str, done: set[str]) -> list[Any]:
    pods = core.list_namespaced_pod(namespace).items
    ready = []
    for pod in pods:
        annotations = pod.metadata.annotations or {}
        owners = pod.metadata.owner_references or []
        if (
            pod.metadata.uid not in done
            and annotations.get(HOLD) == "true"
            and pod.status.phase == "Running"
            and not pod.metadata.deletion_timestamp
            and any(o.kind == "Job" for o in owners)
        ):
            ready.append(pod)
    return sorted(ready, key=lambda p: p.metadata.creation_timestamp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localrun", description=__doc__)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--venv-bin", type=Path, default=Path(sys.executable).parent)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pod listings")
    args = parser.parse_args(argv)
    config.load_kube_config()
    core = client.CoreV1Api()
    root = args.state_dir.resolve() / "pods"
    logs = args.state_dir.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    while True:
        for pod in held_pods(core, args.namespace, done):
            done.add(pod.metadata.uid)
            started = time.monotonic()
            print(json.dumps({"event": "run", "pod": pod.metadata.name}), flush=True)
            result = run_pod(core, pod, root, args.venv_bin.resolve(), logs)
            patch = {"metadata": {"annotations": result}}
            core.patch_namespaced_pod(pod.metadata.name, args.namespace, patch)
            print(
                json.dumps(
                    {
                        "event": "done",
                        "pod": pod.metadata.name,
                        "outcome": result[OUTCOME],
                        "seconds": round(time.monotonic() - started, 1),
                    }
                ),
                flush=True,
            )
        time.sleep(args.interval)
