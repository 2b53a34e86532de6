"""Torch draft models in the speculators format.

Public API:
    Eagle3DraftModel, EagleDraftModel        models (forward = TTT unroll, propose = drafting)
    DFlashDraftModel                         forward = blocks at anchors, propose = one block
    DFlash2DraftModel                        DFlash + local convolutions; propose reranks (selector)
    load_draft_model(ref, verifier=None, ...) -> DraftModel     dispatch on speculators_model_type
    build_eagle3_config(verifier_config, ...) -> Eagle3Config   upstream's training defaults
    build_eagle_config(verifier_config, ...) -> EagleConfig     EAGLE-1/HASS layout for training
    build_dflash_config(verifier_config, ...) -> DFlashConfig   upstream's DFlash recipe
    build_dflash2_config(verifier_config, ...) -> DFlash2Config upstream's dflash2 defaults on that recipe
    VerifierHead                             verifier logits over the draft vocabulary (training targets)
    read_verifier_config, load_verifier_tensors
    DraftOutput, Proposal
"""

from __future__ import annotations

import os
from typing import Any

from speculators_core.format import load_config
from speculators_core.format.errors import FormatError
from speculators_core.format.registry import get_speculator_type
from speculators_core.models.base import CHECKPOINT_PATTERNS, DraftModel, DraftOutput, Proposal
from speculators_core.models.dflash import DFlashDraftModel, build_dflash_config
from speculators_core.models.dflash2 import DFlash2DraftModel, build_dflash2_config
from speculators_core.models.eagle import EagleDraftModel, build_eagle_config
from speculators_core.models.eagle3 import (
    Eagle3DraftModel,
    build_eagle3_config,
    check_vocab_mapping,
    default_aux_layer_ids,
    t2d_from_d2t,
)
from speculators_core.models.hub import snapshot
from speculators_core.models.verifier import VerifierHead, load_verifier_tensors, read_verifier_config

MODEL_CLASSES: dict[str, type[DraftModel]] = {
    "eagle3": Eagle3DraftModel,
    "eagle": EagleDraftModel,
    "dflash": DFlashDraftModel,
    "dflash2": DFlash2DraftModel,
}


def model_class_for(speculators_model_type: str) -> type[DraftModel]:
    entry = get_speculator_type(speculators_model_type)
    if entry.name not in MODEL_CLASSES:
        raise FormatError(
            f"speculators_model_type {entry.name!r} ({entry.description}) has no model in this release; "
            f"loadable: {', '.join(sorted(MODEL_CLASSES))}"
        )
    return MODEL_CLASSES[entry.name]


def load_draft_model(ref: str | os.PathLike[str], **kwargs: Any) -> DraftModel:
    """Load any supported speculators checkpoint (local directory or hub id); kwargs as from_pretrained."""
    directory = snapshot(ref, allow_patterns=CHECKPOINT_PATTERNS, revision=kwargs.get("revision"))
    cls = model_class_for(load_config(directory).speculators_model_type)
    return cls.from_pretrained(directory, **{k: v for k, v in kwargs.items() if k != "revision"})


__all__ = [
    "MODEL_CLASSES",
    "DFlash2DraftModel",
    "DFlashDraftModel",
    "DraftModel",
    "DraftOutput",
    "Eagle3DraftModel",
    "EagleDraftModel",
    "Proposal",
    "VerifierHead",
    "build_dflash2_config",
    "build_dflash_config",
    "build_eagle3_config",
    "build_eagle_config",
    "check_vocab_mapping",
    "default_aux_layer_ids",
    "load_draft_model",
    "load_verifier_tensors",
    "model_class_for",
    "read_verifier_config",
    "t2d_from_d2t",
]
