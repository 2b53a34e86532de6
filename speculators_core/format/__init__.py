"""The speculators Hugging Face format (vllm-project/speculators 0.9.0), torch-free.

Public API (the operator imports this package; keep it stable):

    load_config(path) -> SpeculatorModelConfig           checkpoint dir or config.json; typed by type
    config_from_dict(data, source=...) -> SpeculatorModelConfig
    save_config(config, directory) -> Path               atomic write of config.json
    Eagle3Config, EagleConfig, DFlashConfig, DFlash2Config, SpeculatorModelConfig   pydantic models
    SpeculatorsConfig, GreedyProposal, VerifierInfo      the envelope blocks
    register_speculator_type / get_speculator_type / known_types   the registry
    describe_checkpoint(dir) -> dict                     the `inspect --json` object
    FormatError, CheckpointError, IncompatibleError, SourceUnavailableError, SpeculatorsError
"""

from speculators_core.format.dflash import DFlash2Config, DFlashConfig, DFlashLayerConfig
from speculators_core.format.eagle import EagleConfig, EagleLayerConfig
from speculators_core.format.eagle3 import DraftLayerConfig, Eagle3Config, Eagle3LayerConfig
from speculators_core.format.envelope import (
    GreedyProposal,
    SpeculatorModelConfig,
    SpeculatorsConfig,
    VerifierInfo,
)
from speculators_core.format.errors import (
    CheckpointError,
    FormatError,
    IncompatibleError,
    SourceUnavailableError,
    SpeculatorsError,
)
from speculators_core.format.io import (
    CONFIG_NAME,
    config_from_dict,
    config_to_json,
    load_config,
    read_config_dict,
    save_config,
)
from speculators_core.format.registry import (
    SpeculatorType,
    get_speculator_type,
    known_types,
    register_speculator_type,
)
from speculators_core.format.summary import count_params, describe_checkpoint, describe_config, serve_command

__all__ = [
    "CONFIG_NAME",
    "CheckpointError",
    "DFlash2Config",
    "DFlashConfig",
    "DFlashLayerConfig",
    "DraftLayerConfig",
    "Eagle3Config",
    "Eagle3LayerConfig",
    "EagleConfig",
    "EagleLayerConfig",
    "FormatError",
    "GreedyProposal",
    "IncompatibleError",
    "SourceUnavailableError",
    "SpeculatorModelConfig",
    "SpeculatorType",
    "SpeculatorsConfig",
    "SpeculatorsError",
    "VerifierInfo",
    "config_from_dict",
    "config_to_json",
    "count_params",
    "describe_checkpoint",
    "describe_config",
    "get_speculator_type",
    "known_types",
    "load_config",
    "read_config_dict",
    "register_speculator_type",
    "save_config",
    "serve_command",
]
