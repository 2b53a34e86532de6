"""fetch / publish against real endpoints on loopback: moto's S3 server (a stand-in for S3), the Hugging Face
hub client offline with a populated cache, and an unreachable hub (HF_ENDPOINT on a closed port)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from speculators_core.cli.common import ExitCode

from .conftest import cli_subprocess, read_json

CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**CREDS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_kw(env)).create_bucket(Bucket="models")
    yield env
    server.stop()


def _kw(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"speculators_model_type": "eagle3"}')
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 400)
    (d / "sub" / "extra.txt").write_text("nested")
    return d


def test_publish_then_fetch_round_trip_over_s3(s3, tmp_path):
    src = _model_dir(tmp_path)
    proc = cli_subprocess(
        "publish", src, "--to", "s3://models/runs/a", "--summary-path", tmp_path / "p.json", env=s3
    )
    assert proc.returncode == 0, proc.stderr
    assert read_json(tmp_path / "p.json") == {"step": "publish", "uri": "s3://models/runs/a"}
    dest = tmp_path / "fetched"
    proc = cli_subprocess(
        "fetch", "s3://models/runs/a", "--dest", dest, "--summary-path", tmp_path / "f.json", env=s3
    )
    assert proc.returncode == 0, proc.stderr
    summary = read_json(tmp_path / "f.json")
    assert summary["step"] == "fetch" and summary["files"] >= 3 and summary["path"] == str(dest)
    assert _tree(dest) == _tree(src)
    # A retried init container skips what is complete.
    before = (dest / "model.safetensors").stat().st_ino
    assert cli_subprocess("fetch", "s3://models/runs/a", "--dest", dest, env=s3).returncode == 0
    assert (dest / "model.safetensors").stat().st_ino == before


def test_missing_bucket_or_prefix_is_permanent(s3, tmp_path):
    for uri in ("s3://no-such-bucket/x", "s3://models/nothing-here"):
        proc = cli_subprocess("fetch", uri, "--dest", tmp_path / "d", env=s3)
        assert proc.returncode == ExitCode.USAGE, proc.stderr
        assert uri.split("/")[2] in proc.stderr


def test_unreachable_s3_is_transient(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**CREDS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}
    proc = cli_subprocess("fetch", "s3://models/x", "--dest", tmp_path / "d", env=env, timeout=300)
    assert proc.returncode == ExitCode.TRANSIENT, proc.stderr


def test_publish_refuses_a_directory_without_a_model(s3, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli_subprocess("publish", tmp_path / "empty", "--to", "s3://models/x", env=s3)
    assert proc.returncode == ExitCode.USAGE and "config.json" in proc.stderr


def _populate_hub_cache(hf_home: Path, repo: str, files: dict[str, str]) -> None:
    """The hub cache layout huggingface_hub reads offline (models--org--name/{refs,snapshots})."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)


def test_hf_fetch_offline_from_a_populated_cache(tmp_path):
    hf_home = tmp_path / "hf"
    _populate_hub_cache(hf_home, "org/tiny", {"config.json": '{"hidden_size": 8}', "tokenizer.json": "{}"})
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    proc = cli_subprocess(
        "fetch", "hf://org/tiny", "--dest", tmp_path / "v", "--summary-path", tmp_path / "s.json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "v" / "config.json").read_text() == '{"hidden_size": 8}'
    proc = cli_subprocess("fetch", "hf://org/other", "--dest", tmp_path / "o", env=env)
    assert proc.returncode == ExitCode.USAGE and "HF_HUB_OFFLINE" in proc.stderr


def test_unreachable_hub_is_transient(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HUB_ETAG_TIMEOUT": "2",
    }
    proc = cli_subprocess("fetch", "hf://org/tiny", "--dest", tmp_path / "v", env=env, timeout=300)
    assert proc.returncode == ExitCode.TRANSIENT, proc.stderr


def test_pvc_and_local_paths_are_checked_not_copied(tmp_path):
    proc = cli_subprocess("fetch", tmp_path, "--summary-path", tmp_path / "s.json")
    assert proc.returncode == 0 and read_json(tmp_path / "s.json")["path"] == str(tmp_path)
    proc = cli_subprocess("fetch", "pvc://no-such-claim/models/x")
    assert proc.returncode == ExitCode.USAGE and "/mnt/pvc/no-such-claim" in proc.stderr
    proc = cli_subprocess("fetch", "ftp://host/x")
    assert proc.returncode == ExitCode.USAGE
