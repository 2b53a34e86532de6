"""Convert research checkpoints into the speculators format.

    convert_checkpoint(source, verifier, algorithm, output, *, validate=False, ...) -> ConversionReport

algorithm "eagle3": SafeAILab/SpecForge (`midlayer.*`) and NVIDIA Model-Optimizer EAGLE-3 exports.
algorithm "eagle":  EAGLE-1/EAGLE-2/HASS research checkpoints (legacy `eagle`; vLLM 0.33 cannot serve it).
algorithm "dflash": z-lab DFlash checkpoints (`dflash_config` in config.json; the body as DFlashDraftModel).

Inputs: a directory or weight file (.safetensors, sharded safetensors + index, .bin, sharded .bin) or a hub
id. The result is written to a temporary directory next to `output`, checked by loading it (and, with
validate=True, running it), and only then renamed to `output`: a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from speculators_core.convert.common import Verifier, cast_floats, main_float_dtype, unexpected_error
from speculators_core.convert.dflash import DFlashOptions, plan_dflash
from speculators_core.convert.eagle import EagleOptions, plan_eagle
from speculators_core.convert.eagle3 import Eagle3Options, plan_eagle3
from speculators_core.convert.report import ConversionReport
from speculators_core.convert.source import ResearchCheckpoint, read_checkpoint
from speculators_core.convert.validate import validate_checkpoint
from speculators_core.format import save_config
from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.errors import FormatError
from speculators_core.models import MODEL_CLASSES
from speculators_core.models.base import DraftModel
from speculators_core.models.weights import WEIGHTS_NAME, atomic_directory, save_safetensors

ALGORITHMS = ("eagle3", "eagle", "dflash")


def convert_checkpoint(
    source: str | os.PathLike[str],
    verifier: str | os.PathLike[str],
    algorithm: str,
    output: str | os.PathLike[str],
    *,
    validate: bool = False,
    speculative_tokens: int | None = None,
    norm_before_residual: bool | None = None,
    norm_output: bool | None = None,
    aux_layer_ids: Sequence[int] | None = None,
    ignore_tensors: Sequence[str] = (),
    mask_token_id: int | None = None,
    overwrite: bool = False,
    revision: str | None = None,
    verifier_revision: str | None = None,
) -> ConversionReport:
    """Convert `source` for `verifier` and write the speculators checkpoint to `output`.

    Raises FormatError/CheckpointError (bad input), IncompatibleError (does not fit the verifier),
    SourceUnavailableError (hub unreachable). The report lists renamed, dropped, filled and absent tensors.
    """
    if algorithm not in ALGORITHMS:
        raise FormatError(
            f"algorithm {algorithm!r} is not supported for conversion; allowed: {', '.join(ALGORITHMS)}"
        )
    if speculative_tokens is not None and speculative_tokens < 1:
        raise FormatError(f"speculative_tokens must be >= 1, got {speculative_tokens}")
    out_dir = Path(output)
    # Refuse a non-empty output before doing any work.
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FormatError(
            f"{out_dir}: output directory exists and is not empty; choose a new --output, remove it, or pass "
            "--overwrite"
        )
    ver = Verifier.read(str(verifier), revision=verifier_revision)
    ckpt = read_checkpoint(source, revision=revision)
    report = ConversionReport(source=str(source), algorithm=algorithm)
    if algorithm == "dflash":
        opts = DFlashOptions(
            speculative_tokens=speculative_tokens,
            aux_layer_ids=list(aux_layer_ids) if aux_layer_ids is not None else None,
            mask_token_id=mask_token_id,
            ignore_tensors=tuple(ignore_tensors),
        )
        config, state = plan_dflash(ckpt, ver, opts, report)
    else:
        config, state = _plan(
            ckpt,
            ver,
            algorithm,
            report,
            speculative_tokens or 3,
            norm_before_residual,
            norm_output,
            aux_layer_ids,
            ignore_tensors,
        )
    state = cast_floats(state, main_float_dtype(ckpt.state))
    _check_against_model(config, state, source=str(ckpt.directory))
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        save_config(config, tmp)
        save_safetensors(state, tmp / WEIGHTS_NAME)
        DraftModel._add_dtype_to_config(tmp, state)
        report.validation = validate_checkpoint(tmp, ver) if validate else None
    report.output = str(out_dir)
    return report


def _plan(
    ckpt: ResearchCheckpoint,
    verifier: Verifier,
    algorithm: str,
    report: ConversionReport,
    speculative_tokens: int,
    norm_before_residual: bool | None,
    norm_output: bool | None,
    aux_layer_ids: Sequence[int] | None,
    ignore_tensors: Sequence[str],
) -> tuple[SpeculatorModelConfig, dict[str, torch.Tensor]]:
    if algorithm == "eagle3":
        opts3 = Eagle3Options(
            speculative_tokens=speculative_tokens,
            norm_before_residual=norm_before_residual,
            norm_output=norm_output,
            aux_layer_ids=aux_layer_ids,
            ignore_tensors=tuple(ignore_tensors),
        )
        return plan_eagle3(ckpt, verifier, opts3, report)
    return plan_eagle(ckpt, verifier, EagleOptions(speculative_tokens, tuple(ignore_tensors)), report)


def _check_against_model(
    config: SpeculatorModelConfig, state: dict[str, torch.Tensor], *, source: str
) -> None:
    """Names, shapes and vocab mapping, checked by the model class that will load them (nothing copied)."""
    with torch.device("meta"):  # shapes only: no memory for a large draft
        model = MODEL_CLASSES[config.speculators_model_type](config)  # type: ignore[arg-type]
    unexpected = sorted(set(state) - set(model.expected_tensors()))
    if unexpected:
        raise unexpected_error(source, unexpected, config.speculators_model_type)
    model.validate_state_dict(state, source=source)
    if "d2t" in state and "t2d" in state:
        from speculators_core.models.eagle3 import check_vocab_mapping

        check_vocab_mapping(
            state["d2t"],
            state["t2d"],
            draft_vocab_size=state["d2t"].shape[0],
            vocab_size=state["t2d"].shape[0],
            source=source,
        )


__all__ = ["ALGORITHMS", "ConversionReport", "convert_checkpoint", "read_checkpoint"]
