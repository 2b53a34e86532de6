"""The objects the operator currently watches (from Kopf's watch events), for the periodic loops.

Kopf's timers would do this but add a finalizer to every object, which blocks deletion whenever the
operator is not running; watch events need no finalizer.
"""

from __future__ import annotations

import threading
from typing import Any

from speculators_operator.render.training import STEPS

Key = tuple[str, str]  # (namespace, name)


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {}

    def upsert(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        with self._lock:
            self._objects.setdefault(kind, {})[(meta.get("namespace", ""), meta.get("name", ""))] = body

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.get(kind, {}).pop((namespace, name), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(kind, {}).get((namespace, name))

    def items(self, kind: str) -> list[tuple[Key, dict[str, Any]]]:
        with self._lock:
            return list(self._objects.get(kind, {}).items())

    def speculators_of_training(self, namespace: str, training: str) -> list[str]:
        """Speculators whose spec.draft.trainingRef names this training."""
        out = []
        for (ns, name), body in self.items("Speculator"):
            ref = (((body.get("spec") or {}).get("draft") or {}).get("trainingRef") or {}).get("name")
            if ns == namespace and ref == training:
                out.append(name)
        return out

    def benchmarks_of_speculator(self, namespace: str, speculator: str) -> list[str]:
        """Benchmarks measuring this Speculator (they wait for it to be Ready)."""
        return [
            name
            for (ns, name), body in self.items("SpeculatorBenchmark")
            if ns == namespace
            and ((body.get("spec") or {}).get("speculatorRef") or {}).get("name") == speculator
        ]

    def trainings_deploying_to(self, namespace: str, speculator: str) -> list[str]:
        """Trainings whose spec.deploy targets this Speculator (several, when retrains take turns)."""
        out = []
        for (ns, name), body in self.items("SpeculatorTraining"):
            deploy = (body.get("spec") or {}).get("deploy")
            if ns == namespace and deploy is not None and (deploy.get("name") or name) == speculator:
                out.append(name)
        return out

    def training_of_job(self, namespace: str, job: str) -> str | None:
        """The training whose step Job (`<training>-<step>`) this is, when it is one we watch."""
        for step in STEPS:
            training = job.removesuffix(f"-{step}")
            if training != job and self.get("SpeculatorTraining", namespace, training) is not None:
                return training
        return None
