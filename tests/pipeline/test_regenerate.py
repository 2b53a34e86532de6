"""Response regeneration: transformers generate, and an OpenAI-compatible endpoint (a loopback stand-in for
a vLLM server, serving the same tiny verifier) give the verifier's own greedy replies."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from speculators_core.cli.common import ExitCode
from speculators_core.data.regenerate import LocalGenerator
from speculators_core.data.store import TokenStore
from speculators_core.testing import corpus

from .conftest import cli, read_json


@pytest.fixture(scope="module")
def verifier(stack):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(stack.verifier)).eval()
    return model, AutoTokenizer.from_pretrained(str(stack.verifier))


@pytest.fixture
def small_data(tmp_path):
    path = tmp_path / "d.jsonl"
    corpus.write_jsonl(path, 6, seed=21, max_turns=2)
    return path


class _StandIn(BaseHTTPRequestHandler):
    """Stand-in for vLLM's OpenAI-compatible server: /v1/models and /v1/chat/completions (greedy)."""

    generator: LocalGenerator
    lock = threading.Lock()
    requests = 0

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"data": [{"id": "tiny-verifier"}]})

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert req["model"] == "tiny-verifier" and req["temperature"] == 0.0
        with self.lock:  # one generate at a time on the shared model
            type(self).requests += 1
            self.generator.max_new_tokens = req["max_tokens"]
            reply = self.generator.generate([req["messages"]])[0]
        self._send({"choices": [{"message": {"role": "assistant", "content": reply.content}}]})

    def log_message(self, *args) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_regeneration_is_the_verifiers_greedy_reply(stack, verifier, small_data, tmp_path):
    model, tok = verifier
    out = tmp_path / "regen"
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        small_data,
        "--output",
        out,
        "--regenerate-responses",
        "--regen-max-tokens",
        24,
        "--holdout-fraction",
        0,
        "--summary-path",
        tmp_path / "s.json",
    )
    meta = read_json(out / "meta.json")
    assert meta["regenerated"] and meta["stats"]["regenerated"] == 6
    # Independent check on the first conversation's first turn: generate() directly.
    first = json.loads(small_data.read_text().splitlines()[0])
    msgs = first.get("messages") or [
        {"role": {"human": "user", "gpt": "assistant"}.get(t["from"], t["from"]), "content": t["value"]}
        for t in first["conversations"]
    ]
    upto = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prompt = tok.apply_chat_template(
        msgs[:upto], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    ref = model.generate(
        torch.tensor([prompt]), max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id
    )
    reply = tok.decode(ref[0, len(prompt) :], skip_special_tokens=True).strip()
    ids, mask = TokenStore(out / "train")[0]
    assert reply and reply in tok.decode(ids[mask.astype(bool)])


def test_endpoint_regeneration_matches_local(stack, verifier, small_data, tmp_path):
    model, tok = verifier
    _StandIn.generator = LocalGenerator(model, tok, max_new_tokens=24)
    _StandIn.requests = 0
    port = _free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cli(
            "prepare-data",
            "--verifier",
            stack.verifier,
            "--data",
            small_data,
            "--output",
            tmp_path / "ep",
            "--regenerate-responses",
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--regen-max-tokens",
            24,
            "--holdout-fraction",
            0,
        )
    finally:
        server.shutdown()
        thread.join()
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        small_data,
        "--output",
        tmp_path / "local",
        "--regenerate-responses",
        "--regen-max-tokens",
        24,
        "--holdout-fraction",
        0,
    )
    turns = sum(
        1
        for line in small_data.read_text().splitlines()
        for t in json.loads(line).get("messages", [])
        if t["role"] == "assistant"
    ) + sum(
        1
        for line in small_data.read_text().splitlines()
        for t in json.loads(line).get("conversations", [])
        if t["from"] == "gpt"
    )
    assert _StandIn.requests == turns
    a, b = TokenStore(tmp_path / "ep" / "train"), TokenStore(tmp_path / "local" / "train")
    assert len(a) == len(b) == 6
    for i in range(len(a)):
        assert a[i][0].tolist() == b[i][0].tolist() and a[i][1].tolist() == b[i][1].tolist()


def test_unreachable_endpoint_is_transient(stack, small_data, tmp_path):
    port = _free_port()  # nothing listens there
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        small_data,
        "--output",
        tmp_path / "o",
        "--regenerate-responses",
        "--endpoint",
        f"http://127.0.0.1:{port}/v1",
        "--regen-retries",
        0,
        expect=ExitCode.TRANSIENT,
    )
    assert not (tmp_path / "o").exists()


def test_captured_traffic_becomes_training_data_on_the_verifiers_answers(stack, verifier, tmp_path):
    """Requests through the capture proxy (in front of the stand-in server) are kept as prompts only;
    prepare-data on that directory has the same server answer them, and trains on every one."""
    import asyncio
    import urllib.request

    from speculators_core.capture.proxy import CaptureProxy
    from speculators_core.capture.records import Sampler
    from speculators_core.capture.writer import CaptureWriter

    model, tok = verifier
    _StandIn.generator = LocalGenerator(model, tok, max_new_tokens=16)
    port = _free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    writer = CaptureWriter(tmp_path / "traffic", "pod-a", records_per_file=3)
    writer.start()
    loop = asyncio.new_event_loop()
    proxy_server = loop.run_until_complete(
        CaptureProxy("127.0.0.1", port, writer, Sampler(1.0)).serve("127.0.0.1", 0)
    )
    proxy_port = proxy_server.sockets[0].getsockname()[1]
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    prompts = ["tell me about the sea", "count to three", "what is a draft model", "name a colour", "hi"]
    try:
        for text in prompts:
            body = {"model": "tiny-verifier", "temperature": 0.0, "max_tokens": 16,
                    "messages": [{"role": "user", "content": text}]}  # fmt: skip
            req = urllib.request.Request(
                f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-secret"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert json.loads(resp.read())["choices"][0]["message"]["content"] is not None
        # The regeneration client's own requests through the proxy are not captured.
        from speculators_core.data.regenerate import EndpointGenerator

        EndpointGenerator(f"http://127.0.0.1:{proxy_port}", model="tiny-verifier", max_tokens=4).generate(
            [[{"role": "user", "content": "not live traffic"}]]
        )
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join()
        writer.close()
        assert "not live traffic" not in "".join(p.read_text() for p in (tmp_path / "traffic").iterdir())
        files = sorted(p.name for p in (tmp_path / "traffic").iterdir())
        assert files == ["pod-a.00000000.jsonl", "pod-a.00000001.jsonl"]  # rotated at 3, finished at close
        _StandIn.requests = 0
        cli(
            "prepare-data", "--verifier", stack.verifier, "--data", tmp_path / "traffic",
            "--output", tmp_path / "prepared", "--regenerate-responses",
            "--endpoint", f"http://127.0.0.1:{port}", "--regen-max-tokens", 16, "--holdout-fraction", 0,
        )  # fmt: skip
    finally:
        server.shutdown()
        proxy_server.close()
    meta = read_json(tmp_path / "prepared" / "meta.json")
    assert meta["stats"]["regenerated"] == len(prompts) and _StandIn.requests == len(prompts)
    store = TokenStore(tmp_path / "prepared" / "train")
    assert len(store) == len(prompts)
    ids, mask = store[0]
    reply = _StandIn.generator.generate([[{"role": "user", "content": prompts[0]}]])[0].content
    assert reply and reply in tok.decode(ids[mask.astype(bool)])
