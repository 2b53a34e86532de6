"""The train step as a Kubeflow Trainer v2 TrainJob (spec.training.runtime: trainjob; Trainer >= 2.2).

The TrainJob runs on a ClusterTrainingRuntime (the chart ships `speculators-torchrun`, the shape of
Trainer's own `torch-distributed`: replicatedJob `node`, container `node`, `mlPolicy.torch`). Trainer
then runs a JobSet `<trainjob>` with an Indexed Job per replicatedJob and injects torchrun's rendezvous as
PET_NNODES/PET_NPROC_PER_NODE/PET_NODE_RANK/PET_MASTER_ADDR/PET_MASTER_PORT, which torchrun reads from
the environment: the command line is the Job runtime's, less the rendezvous flags.

What Trainer 2.3 lets a TrainJob set, and where it goes:
- `spec.trainer`: image, command, args, env (merged by name; PET_* are Trainer's), numNodes, numProcPerNode,
  resourcesPerNode — the only place for the node container's image, command, env and resources;
- one `spec.runtimePatches` entry owned by `speculators.ai/operator` (Kueue owns its own entry): the pod's
  labels and annotations (the operator finds the pods by its labels, as with a Job), security context,
  volumes, scheduling, and the `node` container's mounts and security context. It must name replicatedJob
  and container `node`: Trainer 2.3 adds, rather than refuses, a patch for a name the runtime lacks;
- metadata labels do not reach the JobSet or pods; `kueue.x-k8s.io/queue-name` there is what Kueue reads.

A TrainJob's trainer block and patches are immutable once created: a changed input makes a new one (the
step hash), as with a Job.
"""

from __future__ import annotations

from typing import Any

from speculators_operator.render import common as r

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
NODE = "node"  # the trainer replicatedJob and its container in Trainer's torch runtimes (and ours)
PATCH_MANAGER = "speculators.ai/operator"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on the pods of a TrainJob's JobSet
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
# Pod-spec fields a runtime patch may set (Trainer 2.3's PodSpecPatch), of those the operator renders.
PATCHABLE = ("serviceAccountName", "nodeSelector", "affinity", "tolerations", "imagePullSecrets")


def train_job(
    metadata: dict[str, Any],
    pod_metadata: dict[str, Any],
    pod_spec: dict[str, Any],
    *,
    runtime: str,
    nodes: int,
    gpus_per_node: int,
    queue: str | None,
) -> dict[str, Any]:
    """The TrainJob for the train step's pod (one container, `torchrun -m speculators_core.cli train ...`)."""
    (container,) = pod_spec["containers"]
    # PET_* (torchrun's rendezvous) are Trainer's to set: the Job runtime's own never get here.
    env = [e for e in container.get("env") or [] if not e["name"].startswith("PET_")]
    pod_patch: dict[str, Any] = {
        "securityContext": pod_spec["securityContext"],
        "volumes": pod_spec["volumes"],
        "containers": [
            {
                "name": NODE,
                "volumeMounts": container["volumeMounts"],
                "securityContext": container["securityContext"],
            }
        ],
    }
    pod_patch.update({k: pod_spec[k] for k in PATCHABLE if k in pod_spec})
    labels = dict(metadata.get("labels") or {})
    if queue:
        labels[r.QUEUE_LABEL] = queue
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {**metadata, "labels": labels},
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": "ClusterTrainingRuntime",
                "name": runtime,
            },
            "trainer": {
                "image": container["image"],
                "command": container["command"],
                "args": container["args"],
                "env": env,
                "numNodes": nodes,
                "numProcPerNode": gpus_per_node,
                "resourcesPerNode": container.get("resources") or {},
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "metadata": {"labels": dict(metadata.get("labels") or {})},
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": NODE,
                                        "template": {
                                            "spec": {
                                                "template": {"metadata": pod_metadata, "spec": pod_patch}
                                            }
                                        },
                                    }
                                ]
                            },
                        }
                    },
                }
            ],
        },
    }


def cluster_training_runtime(
    name: str, image: str, pull_policy: str, max_restarts: int = 3
) -> dict[str, Any]:
    """The ClusterTrainingRuntime the chart ships (its template renders the same object): Trainer's
    torch-distributed shape with the runtime image, restricted pods, and the CLI's exit codes (2, 3:
    permanent) in the Job's pod failure policy; the JobSet restarts (each resuming from the workspace's
    checkpoints) up to max_restarts times."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {
                "spec": {
                    # Exit codes 2/3 failed the Job through its pod failure policy: no restart fixes them.
                    "failurePolicy": {
                        "maxRestarts": max_restarts,
                        "rules": [
                            {
                                "name": "permanent-exit-codes",
                                "action": "FailJobSet",
                                "onJobFailureReasons": ["PodFailurePolicy"],
                            }
                        ],
                    },
                    "replicatedJobs": [
                        {
                            "name": NODE,
                            "template": {
                                "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
                                "spec": {
                                    "backoffLimit": 0,
                                    "podFailurePolicy": r.job_failure_policy(),
                                    "template": {
                                        "spec": {
                                            "restartPolicy": "Never",
                                            "automountServiceAccountToken": False,
                                            "enableServiceLinks": False,
                                            "securityContext": r.pod_security_context(),
                                            "containers": [
                                                {
                                                    "name": NODE,
                                                    "image": image,
                                                    "imagePullPolicy": pull_policy,
                                                    "securityContext": r.container_security_context(),
                                                    "terminationMessagePolicy": "FallbackToLogsOnError",
                                                }
                                            ],
                                        }
                                    },
                                },
                            },
                        }
                    ],
                }
            },
        },
    }


__all__ = ["JOBSET_NAME_LABEL", "NODE", "cluster_training_runtime", "train_job"]
