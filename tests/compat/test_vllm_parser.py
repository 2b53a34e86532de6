"""vLLM 0.33.0's own speculators parser and SpeculativeConfig on every config and serve command we emit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spec_builders import (
    AUX_IDS,
    make_verifier,
    tiny_eagle,
    tiny_eagle3,
    write_nvidia_eagle3,
    write_safeailab_eagle3,
)

from speculators_core.convert import convert_checkpoint
from speculators_core.format import load_config
from speculators_core.serving import build_serve_argv, short_form_applies

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every kind of checkpoint we write: trained-style eagle3 variants, both converters, legacy eagle."""
    root = tmp_path_factory.mktemp("emitted")
    verifier = make_verifier(root / "verifier")
    qwen = make_verifier(root / "qwen3-verifier", arch="qwen3")
    out: dict[str, Path] = {}
    builds = {
        "eagle3-defaults": dict(),
        "eagle3-plain": dict(norm_before_residual=False, norm_before_fc=False, norm_output=False),
        "eagle3-fc-norm": dict(norm_before_fc=False, fc_norm=True, num_layers=2, speculative_tokens=5),
        "eagle3-full-vocab": dict(draft_vocab_size=None),
        "eagle3-sliding": dict(sliding_window=64),
        "eagle3-hub-verifier": dict(verifier_ref="meta-llama/Llama-3.1-8B-Instruct"),
    }
    for name, kwargs in builds.items():
        tiny_eagle3(verifier, **kwargs).save_pretrained(root / name)
        out[name] = root / name
    tiny_eagle3(qwen, draft_arch="qwen3").save_pretrained(root / "eagle3-qwen3")
    out["eagle3-qwen3"] = root / "eagle3-qwen3"
    wide = tiny_eagle3(
        verifier, layer_overrides={"hidden_size": 96, "head_dim": 24, "intermediate_size": 160}
    )
    convert_checkpoint(
        write_nvidia_eagle3(root / "nv-src", wide, AUX_IDS), verifier, "eagle3", root / "converted-nvidia"
    )
    out["converted-nvidia"] = root / "converted-nvidia"
    convert_checkpoint(
        write_safeailab_eagle3(root / "sa-src", tiny_eagle3(verifier), "bin"),
        verifier,
        "eagle3",
        root / "converted-safeailab",
        speculative_tokens=4,
    )
    out["converted-safeailab"] = root / "converted-safeailab"
    tiny_eagle(verifier, fusion_bias=True).save_pretrained(root / "legacy-eagle")
    out["legacy-eagle"] = root / "legacy-eagle"
    return out


def test_vllm_parses_every_eagle3_config(run_snippet, emitted: dict[str, Path]) -> None:
    dirs = {k: v for k, v in emitted.items() if k != "legacy-eagle"}
    result = run_snippet("vllm_parse", {"dirs": [str(p) for p in dirs.values()]})["parsed"]
    for name, path in dirs.items():
        parsed = result[str(path)]
        assert "error" not in parsed, f"{name}: {parsed.get('error')}"
        ours = load_config(path)
        assert parsed["speculative"] == {
            "method": "eagle3",
            "num_speculative_tokens": ours.speculative_tokens,
        }, name
        pre = parsed["pretrained"]
        arch = (
            "Eagle3Qwen3ForCausalLM"
            if ours.transformer_layer_config.model_type == "qwen3"
            else "Eagle3LlamaForCausalLM"
        )
        assert pre["architectures"] == [arch] and parsed["config_architectures"] == [arch], name
        assert parsed["config_class"] == "SpeculatorsConfig"
        # vLLM reads our explicit values, never its own defaults.
        assert pre["norm_before_residual"] is ours.norm_before_residual, name
        assert (pre["norm_before_fc"], pre["fc_norm"], pre["norm_output"]) == (
            ours.norm_before_fc,
            ours.fc_norm,
            ours.norm_output,
        )
        assert pre["draft_vocab_size"] == ours.draft_vocab_size
        assert pre["vocab_size"] == ours.transformer_layer_config.vocab_size
        assert pre.get("target_hidden_size") == ours.target_hidden_size
        assert pre["eagle_aux_hidden_state_layer_ids"] == ours.eagle_aux_hidden_state_layer_ids


def test_vllm_refuses_legacy_eagle_as_inspect_says(run_snippet, emitted: dict[str, Path]) -> None:
    parsed = run_snippet("vllm_parse", {"dirs": [str(emitted["legacy-eagle"])]})["parsed"][
        str(emitted["legacy-eagle"])
    ]
    assert "Expected one of" in parsed["error"]


def test_short_form_rule_matches_vllm(run_snippet, emitted: dict[str, Path]) -> None:
    """vLLM's maybe_override_with_speculators accepts `vllm serve DRAFT` exactly when we say it does."""
    local = emitted["eagle3-defaults"]
    hub = emitted["eagle3-hub-verifier"]
    result = run_snippet("vllm_parse", {"override_models": [str(local), str(hub)]})["override"]
    assert not short_form_applies(load_config(local).verifier_name_or_path)
    assert "Speculators verifier must name a remote model repository" in result[str(local)]["error"]
    assert short_form_applies(load_config(hub).verifier_name_or_path)
    assert result[str(hub)]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert result[str(hub)]["speculative"] == {
        "method": "eagle3",
        "num_speculative_tokens": 3,
        "model": str(hub),
    }


SERVE_CASES = [
    ("eagle3", 3, {}, {"method": "eagle3", "parallel_drafting": False}),
    ("peagle", 4, {}, {"method": "eagle3", "parallel_drafting": True}),
    ("dflash", 7, {}, {"method": "dflash", "parallel_drafting": False}),
    ("dspark", 6, {}, {"method": "dspark", "parallel_drafting": False}),
    ("eagle", 2, {}, {"method": "eagle", "parallel_drafting": False}),
    (
        "eagle3",
        16,
        {"draft_tensor_parallel_size": 1, "attention_backend": "FLASH_ATTN"},
        {"method": "eagle3"},
    ),
]


def test_serve_json_validates_with_vllm_speculative_config(run_snippet) -> None:
    argvs = [
        build_serve_argv(
            "/models/verifier",
            "/models/draft",
            method,
            k,
            tensor_parallel_size=2,
            max_model_len=4096,
            gpu_memory_utilization=0.9,
            port=8000,
            served_model_name="m",
            speculative_extra=extra,
        )
        for method, k, extra, _ in SERVE_CASES
    ]
    configs = [json.loads(argv[argv.index("--speculative-config") + 1]) for argv in argvs]
    flags = sorted(
        {a[2:].replace("-", "_") for argv in argvs for a in argv if a.startswith("--")}
        - {"speculative_config", "port"}
    )
    # What vLLM does with the keys we refuse, so our refusal is not stricter than needed.
    probes = [
        {"model": "d", "method": "eagle3", "num_speculative_tokens": 3, "tensor_parallel_size": 2},
        {"model": "d", "method": "eagle3", "num_speculative_tokens": 3, "bogus": 1},
    ]
    result = run_snippet("vllm_speculative_config", {"configs": configs + probes, "flags": flags})
    for (method, k, _, expected), checked in zip(SERVE_CASES, result["results"], strict=False):
        assert checked["ok"], f"{method}: {checked.get('error')}"
        assert checked["num_speculative_tokens"] == k and checked["model"] == "/models/draft"
        assert {key: checked[key] for key in expected} == expected
    tp, bogus = result["results"][-2:]
    assert not tp["ok"] and "draft_tensor_parallel_size" in tp["error"]
    assert not bogus["ok"] and "bogus" in bogus["error"]
    # Every server flag we render is an engine argument vLLM declares.
    assert all(result["flags"][f] for f in flags), result["flags"]


def test_tuned_batch_size_schedule_is_what_vllm_schedules(run_snippet) -> None:
    """The schedule automatic k renders (load buckets, k 0 where speculation does not pay) is accepted by
    vLLM's SpeculativeConfig and expands, in vLLM's own scheduler code, to the k we meant per batch size."""
    from speculators_operator.metrics.store import k_of
    from speculators_operator.status.tuning import bucket_ranges

    ranges = bucket_ranges([4, 16])
    schedule = tuple((lo, hi, k) for (lo, hi), k in zip(ranges, (5, 2, 0), strict=True))
    argv = build_serve_argv(
        "/models/verifier",
        "/models/draft",
        "eagle3",
        5,
        speculative_extra={"num_speculative_tokens_per_batch_size": [list(e) for e in schedule]},
    )
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    result = run_snippet("vllm_dynamic_schedule", {"config": config, "max_batch": 64})
    assert result["ok"], result["error"]
    assert result["lookup"] == [k_of(schedule, size) for size in range(1, 65)]
    assert result["lookup"][:4] == [5] * 4 and result["lookup"][16] == 0
    # And vLLM refuses what our CEL and renderer never produce: an unsorted or overlapping schedule.
    bad = {**config, "num_speculative_tokens_per_batch_size": [[1, 8, 3], [5, 16, 2]]}
    assert not run_snippet("vllm_dynamic_schedule", {"config": bad, "max_batch": 64})["ok"]


EXTRA_ARGS = [
    (["--tensor_parallel_size", "4"], True),
    (["--tensor-parallel", "4"], True),
    (["--max_model_len=8192"], True),
    (["--gpu_memory_utilization=0.5"], True),
    (["-tp", "2"], True),
    (["-sc", "{}"], True),
    (["--speculative_config.num_speculative_tokens=5"], True),
    (["--speculative-config.method", "ngram"], True),
    (["--spec_tokens", "5"], True),
    (["--served_model_name", "x"], True),
    (["--port=9000"], True),
    (["--max-num-seqs", "128"], False),
    (["--max_num_seqs=128"], False),
    (["--enable-prefix-caching"], False),
    (["--chat-template", "{% for m in messages %}{{ m }}{% endfor %}"], False),
]


def test_extra_args_refusals_match_what_vllms_own_parser_sets(run_snippet) -> None:
    """vllm.extraArgs is refused exactly when vLLM's FlexibleArgumentParser would set an option the operator
    renders — in any spelling it reads (underscores, --flag=value, prefixes, dotted JSON keys)."""
    from speculators_operator.api.vllm_args import MANAGED_LONG, problem

    aliases = {"--tensor-parallel-size": ["-tp"], "--speculative-config": ["-sc"]}
    managed = {flag: aliases.get(flag, []) for flag in MANAGED_LONG}
    unmanaged = ["--max-num-seqs", "--enable-prefix-caching", "--chat-template"]
    cases = [args for args, _ in EXTRA_ARGS]
    result = run_snippet("vllm_flexible_args", {"managed": managed, "unmanaged": unmanaged, "cases": cases})
    for (args, refused), got in zip(EXTRA_ARGS, result["results"], strict=True):
        assert "error" not in got, (args, got)
        sets_managed = any(dest.startswith("managed:") for dest in got["set"])
        assert sets_managed == refused, (args, got)
        assert (problem(args) is not None) == refused, (args, problem(args))
