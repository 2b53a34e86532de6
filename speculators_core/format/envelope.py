"""The envelope every speculators checkpoint shares: type, version and `speculators_config`.

Field names and rules follow vllm-project/speculators 0.9.0 (`config.py`, `proposals/greedy.py`) and what
vLLM 0.33 reads from them (only `proposal_methods[0].speculative_tokens` and `verifier.name_or_path`).
Unknown keys are kept (extra="allow") so a config read and written again loses nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speculators_core.format.registry import register_speculator_type
from speculators_core.version import SPECULATORS_FORMAT_VERSION

# Proposal types upstream still ships; sampling/static_tree/dynamic_tree were removed in 0.4.
PROPOSAL_TYPES = ("greedy",)


class GreedyProposal(BaseModel):
    """`proposal_type: greedy`: a single chain of `speculative_tokens` drafted tokens."""

    model_config = ConfigDict(extra="allow")

    proposal_type: str = "greedy"
    speculative_tokens: int = Field(
        default=5, ge=1, description="k: tokens drafted per step (what vLLM reads)"
    )
    verifier_accept_k: int = Field(default=1, ge=1)
    accept_tolerance: float = Field(default=0.0, ge=0.0)

    @field_validator("proposal_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PROPOSAL_TYPES:
            raise ValueError(
                f"proposal_type {value!r} is not supported; allowed: {', '.join(PROPOSAL_TYPES)}"
            )
        return value


class VerifierInfo(BaseModel):
    """The verifier the draft was trained for. `name_or_path` is a hub id or a path (vLLM needs the key)."""

    model_config = ConfigDict(extra="allow")

    name_or_path: str | None
    architectures: list[str] = Field(default_factory=list)


class SpeculatorsConfig(BaseModel):
    """The `speculators_config` block."""

    model_config = ConfigDict(extra="allow")

    algorithm: str
    proposal_methods: list[GreedyProposal] = Field(min_length=1)
    default_proposal_method: str = "greedy"
    verifier: VerifierInfo

    @classmethod
    def greedy(
        cls, algorithm: str, speculative_tokens: int, verifier: str, architectures: list[str] | None = None
    ) -> SpeculatorsConfig:
        """The block every writer of this release emits: one greedy proposal of k tokens."""
        return cls(
            algorithm=algorithm,
            proposal_methods=[GreedyProposal(speculative_tokens=speculative_tokens)],
            default_proposal_method="greedy",
            verifier=VerifierInfo(name_or_path=verifier, architectures=list(architectures or [])),
        )

    @model_validator(mode="after")
    def _default_is_configured(self) -> SpeculatorsConfig:
        available = [p.proposal_type for p in self.proposal_methods]
        if self.default_proposal_method not in available:
            raise ValueError(
                f"default_proposal_method {self.default_proposal_method!r} must be the proposal_type of one "
                f"of proposal_methods; allowed: {', '.join(available)}"
            )
        return self


class SpeculatorModelConfig(BaseModel):
    """Envelope of a speculators `config.json`; subclasses add the algorithm's fields.

    Used as-is for types that vLLM serves but this release has no model for (dspark, peagle, ...), so their
    method and token count can still be read. A top-level `model_type` is rejected: vLLM then treats the
    directory as a plain model and never reads `speculators_config`.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    # Written into config.json["architectures"] when the config has none.
    default_architectures: ClassVar[list[str]] = []

    speculators_model_type: str
    speculators_version: str = SPECULATORS_FORMAT_VERSION
    speculators_config: SpeculatorsConfig
    architectures: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_model_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model_type" in data:
            raise ValueError(
                "model_type: a speculators config.json must not have a top-level model_type "
                f"(got {data['model_type']!r}); vLLM would load it as a plain model. Remove the key."
            )
        return data

    # Convenience accessors used by inspect, serving and the operator.
    @property
    def speculative_tokens(self) -> int:
        """k as vLLM reads it: `proposal_methods[0].speculative_tokens`."""
        return self.speculators_config.proposal_methods[0].speculative_tokens

    @property
    def verifier_name_or_path(self) -> str | None:
        return self.speculators_config.verifier.name_or_path

    @property
    def algorithm(self) -> str:
        return self.speculators_config.algorithm

    def vocab_sizes(self) -> tuple[int | None, int | None]:
        """(verifier vocab, draft vocab) as recorded in the config; None where the type does not say."""
        extra = self.model_extra or {}
        layer = extra.get("transformer_layer_config")
        vocab = layer.get("vocab_size") if isinstance(layer, dict) else None
        draft = extra.get("draft_vocab_size")
        vocab = vocab if isinstance(vocab, int) else None
        draft = draft if isinstance(draft, int) else vocab
        return vocab, draft

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to config.json (never with `model_type`)."""
        data = self.model_dump(mode="json", exclude={"architectures"})
        data["architectures"] = list(self.architectures or self.default_architectures)
        return data


def _register_envelope_only_types() -> None:
    """Types vLLM or upstream know that have no model here: parsed with the envelope alone."""
    entries = [
        ("peagle", "peagle", True, "parallel EAGLE-3 (served as eagle3 with parallel_drafting)"),
        ("dspark", "dspark", True, "DSpark (DFlash + Markov/confidence heads)"),
        ("mtp", None, False, "native MTP fine-tune (stitched back into the verifier; not a vLLM drafter)"),
        ("xpress", None, False, "XPress (no vLLM speculators updater)"),
    ]
    for name, method, serves, description in entries:
        register_speculator_type(
            name, method=method, vllm_serves=serves, has_model=False, description=description
        )(SpeculatorModelConfig)


_register_envelope_only_types()
