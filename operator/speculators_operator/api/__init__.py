"""API models of the two kinds; the single source of the CRD schemas in crds/."""

from speculators_operator.api.speculator import Speculator, SpeculatorSpec, SpeculatorStatus
from speculators_operator.api.training import (
    SpeculatorTraining,
    SpeculatorTrainingSpec,
    SpeculatorTrainingStatus,
)

__all__ = [
    "Speculator",
    "SpeculatorSpec",
    "SpeculatorStatus",
    "SpeculatorTraining",
    "SpeculatorTrainingSpec",
    "SpeculatorTrainingStatus",
]
