"""The rules a pod must pass on a restricted cluster, as a checker of pod specs:

- Pod Security Standard "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards, which the
  PodSecurity admission of the test API server also enforces: the second, independent check);
- OpenShift's restricted-v2 SCC on top: no fixed runAsUser or fsGroup (MustRunAsRange/MustRunAs pick one
  from the namespace's range), capabilities only NET_BIND_SERVICE added, no hostPath.

Also a stand-in for KServe's pod construction (KServe's controller does not run here): the pod a predictor
gets from its ServingRuntime and InferenceService, merged as KServe merges them.
"""

from __future__ import annotations

from typing import Any

from localrun.kserve_standin import predictor_pod

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
    "image",
}
ALLOWED_ADD = {"NET_BIND_SERVICE"}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]


def violations(pod: dict[str, Any], *, uid_overrides_allowed: bool = False) -> list[str]:
    """Everything in `pod` (a PodSpec) that restricted or restricted-v2 would refuse; [] when it passes.

    `uid_overrides_allowed`: the user set spec.securityContext (runAsUser/fsGroup, for root images on
    vanilla clusters): then fixed IDs are expected, and only PSS restricted applies to them.
    """
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"pod {flag}")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    pod_seccomp = psc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
    if not uid_overrides_allowed:
        for key in ("runAsUser", "fsGroup"):
            if key in psc:
                out.append(f"pod securityContext.{key} (restricted-v2 assigns it)")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in _containers(pod):
        name = c["name"]
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add") or []) - ALLOWED_ADD:
            out.append(f"{name}: capabilities.add {caps['add']}")
        if not (psc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True):
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsNonRoot") is False:
            out.append(f"{name}: runAsNonRoot false")
        if sc.get("runAsUser") == 0 or (not uid_overrides_allowed and "runAsUser" in sc):
            out.append(f"{name}: runAsUser set")
        if not pod_seccomp and sc.get("seccompProfile", {}).get("type") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            out.append(f"{name}: seccompProfile RuntimeDefault missing")
        if sc.get("seccompProfile", {}).get("type") == "Unconfined":
            out.append(f"{name}: seccomp Unconfined")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{name}: procMount")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out


def kserve_predictor_pod(serving_runtime: dict[str, Any], isvc: dict[str, Any]) -> dict[str, Any]:
    """Stand-in for KServe's controller: the predictor pod of `isvc` on `serving_runtime`, merged as KServe
    merges it (hack/localrun/kserve_standin.py)."""
    return predictor_pod(serving_runtime, isvc["spec"]["predictor"])
