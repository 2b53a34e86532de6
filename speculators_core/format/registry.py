"""Registry of speculator types keyed by `speculators_model_type`.

Each entry says which pydantic config class parses the type and how vLLM serves it. A new algorithm
(DFlash, P-EAGLE, MTP) plugs in by calling `register_speculator_type` from its own module; nothing in the
core changes. Types that vLLM serves but this release has no model for are registered with the
envelope-only config class, so `inspect` and the operator can still read their method and token count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from speculators_core.format.errors import FormatError

if TYPE_CHECKING:
    from speculators_core.format.envelope import SpeculatorModelConfig

C = TypeVar("C", bound="type[SpeculatorModelConfig]")


@dataclass(frozen=True)
class SpeculatorType:
    """What the project knows about one `speculators_model_type`.

    method: the value of the Speculator resource's `method` and of `serving`'s method argument
        (eagle3 | eagle | peagle | dflash | dspark), or None when nothing serves it.
    vllm_serves: whether vLLM 0.33 loads checkpoints of this type (its SUPPORTED_SPECULATORS_TYPES).
    has_model: whether `speculators_core.models` has a torch implementation.
    """

    name: str
    config_class: type[SpeculatorModelConfig]
    method: str | None
    vllm_serves: bool
    has_model: bool
    description: str


_REGISTRY: dict[str, SpeculatorType] = {}


def register_speculator_type(
    name: str,
    *,
    method: str | None,
    vllm_serves: bool,
    has_model: bool,
    description: str,
) -> Callable[[C], C]:
    """Class decorator: register `config_class` as the parser of `speculators_model_type == name`."""

    def decorator(config_class: C) -> C:
        _REGISTRY[name] = SpeculatorType(
            name=name,
            config_class=config_class,
            method=method,
            vllm_serves=vllm_serves,
            has_model=has_model,
            description=description,
        )
        return config_class

    return decorator


def known_types() -> list[str]:
    return sorted(_REGISTRY)


def get_speculator_type(name: object, *, source: str = "config.json") -> SpeculatorType:
    """The registry entry for `name`; a FormatError listing the known types otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise FormatError(
            f"{source}: speculators_model_type {name!r} is not a known speculator type; "
            f"allowed: {', '.join(known_types())}"
        )
    return _REGISTRY[name]
