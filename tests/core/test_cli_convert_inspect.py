"""`speculators convert`, `speculators inspect`, `speculators --version` as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from spec_builders import (
    AUX_IDS,
    make_verifier,
    tiny_eagle,
    tiny_eagle3,
    write_eagle1,
    write_safeailab_eagle3,
)

from speculators_core.cli.main import main
from speculators_core.version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "speculators_core.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == f"speculators {__version__}"


def test_convert_then_inspect(verifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "bin")
    out = tmp_path / "draft"
    summary = tmp_path / "summary.json"
    rc = main(
        [
            "convert",
            str(src),
            "--verifier",
            str(verifier_dir),
            "--algorithm",
            "eagle3",
            "--output",
            str(out),
            "--validate",
            "--aux-layer-ids",
            ",".join(map(str, AUX_IDS)),
            "--speculative-tokens",
            "4",
            "--norm-before-residual",
            "--summary-path",
            str(summary),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "renamed midlayer.self_attn.q_proj.weight -> layers.0.self_attn.q_proj.weight" in text
    assert "validated: forward ok" in text
    assert json.loads(summary.read_text())["validated"] is True

    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {
        k: info[k]
        for k in ("algorithm", "method", "speculative_tokens", "verifier", "vocab_size", "draft_vocab_size")
    } == {
        "algorithm": "eagle3",
        "method": "eagle3",
        "speculative_tokens": 4,
        "verifier": str(verifier_dir),
        "vocab_size": 512,
        "draft_vocab_size": 128,
    }
    import torch
    from safetensors.torch import load_file

    state = load_file(out / "model.safetensors")
    assert info["params"] == sum(t.numel() for t in state.values() if t.is_floating_point())
    assert info["params_without_embeddings"] == info["params"] - state["embed_tokens.weight"].numel()
    assert state["d2t"].dtype == torch.int64
    # A local verifier: the long form, because vLLM 0.33 rejects local verifiers in `vllm serve DRAFT`.
    assert info["vllm_serve"] == [
        "vllm",
        "serve",
        str(verifier_dir),
        "--speculative-config",
        json.dumps(
            {"model": str(out), "method": "eagle3", "num_speculative_tokens": 4}, separators=(",", ":")
        ),
    ]

    assert main(["inspect", str(out)]) == 0
    human = capsys.readouterr().out
    assert f"vllm serve {verifier_dir} --speculative-config '" in human
    assert "speculative tokens: 4" in human and "verifier 512, draft 128" in human


def test_inspect_short_form_for_hub_verifier(
    verifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_eagle3(verifier_dir, verifier_ref="meta-llama/Llama-3.1-8B-Instruct").save_pretrained(tmp_path / "d")
    assert main(["inspect", str(tmp_path / "d"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vllm_serve"] == ["vllm", "serve", str(tmp_path / "d")]
    assert info["vllm_serve_command"] == f"vllm serve {tmp_path / 'd'}"


def test_inspect_legacy_eagle_says_vllm_cannot_serve(
    verifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_eagle(verifier_dir).save_pretrained(tmp_path / "e")
    assert main(["inspect", str(tmp_path / "e"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "eagle" and info["vllm_serve"] is None and not info["vllm_serves"]
    assert "cannot serve" in info["vllm_serve_note"]
    assert info["draft_vocab_size"] == info["vocab_size"] == 512


def test_exit_codes(verifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e1 = write_eagle1(tmp_path / "e1", tiny_eagle(verifier_dir))
    other = make_verifier(tmp_path / "other", vocab_size=600)
    assert (
        main(
            [
                "convert",
                str(e1),
                "--verifier",
                str(other),
                "--algorithm",
                "eagle",
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 3
    )
    assert "vocab_size 512 differs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert (
        main(["convert", str(tmp_path / "nope"), "--verifier", str(verifier_dir), "--algorithm", "eagle3"])
        == 2
    )
    assert "no such local directory" in capsys.readouterr().err
    assert main(["inspect", str(e1)]) == 2
    assert "speculators_model_type is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(e1), "--verifier", str(verifier_dir), "--algorithm", "medusa"])
    assert exit_.value.code == 2


def test_default_output_directory(
    verifier_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    e1 = write_eagle1(tmp_path / "EAGLE-tiny", tiny_eagle(verifier_dir), "safetensors")
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(e1), "--verifier", str(verifier_dir), "--algorithm", "eagle"]) == 0
    assert (tmp_path / "EAGLE-tiny-eagle" / "config.json").exists()


def test_inspect_reads_types_without_a_model_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A DSpark draft (no torch model in this release) still gives the operator its method and k."""
    import torch
    from safetensors.torch import save_file

    d = tmp_path / "dspark"
    d.mkdir()
    config = {
        "speculators_model_type": "dspark",
        "speculators_version": "0.9.0",
        "speculators_config": {
            "algorithm": "dspark",
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": 7}],
            "default_proposal_method": "greedy",
            "verifier": {"name_or_path": "Qwen/Qwen3-8B", "architectures": ["Qwen3ForCausalLM"]},
        },
        "transformer_layer_config": {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 64},
        "aux_hidden_state_layer_ids": [1, 17, 33],
        "mask_token_id": 151669,
    }
    (d / "config.json").write_text(json.dumps(config))
    save_file(
        {"fc.weight": torch.zeros(64, 192), "norm.weight": torch.ones(64)}, str(d / "model.safetensors")
    )
    assert main(["inspect", str(d), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["method"], info["speculative_tokens"], info["params"]) == ("dspark", 7, 64 * 192 + 64)
    assert info["vocab_size"] == info["draft_vocab_size"] == 151936
    assert info["vllm_serve"] == ["vllm", "serve", str(d)]  # remote hub verifier: the short form works
