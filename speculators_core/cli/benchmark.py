"""`speculators benchmark`: one GuideLLM run against one OpenAI-compatible server, resumable.

Writes GuideLLM's JSON report to --out (skipped when a complete report is already there: a retried pod
does not measure again). With --metrics-url, vLLM's spec-decode counters are read before and after the run
and the acceptance over the run goes to --acceptance-out (`speculators report` draws it per position).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from speculators_core.cli.common import ExitCode, TransientError, UserError

NAME = "benchmark"
HELP = "measure one server with GuideLLM (resumable; the benchmark Job runs it per server)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from speculators_core.bench.guidellm import BUILTIN, PROFILES

    parser.add_argument("--target", required=True, help="server base URL, e.g. http://my-speculator:8000")
    parser.add_argument("--model", required=True, help="served model name (the server's /v1/models id)")
    parser.add_argument("--out", required=True, type=Path, help="GuideLLM's JSON report goes here")
    data = parser.add_argument_group("data (synthetic by default)")
    data.add_argument("--prompt-tokens", type=int, default=256, help="synthetic prompt length")
    data.add_argument("--output-tokens", type=int, default=128, help="synthetic output length")
    data.add_argument("--data-hub-id", help="a Hugging Face Hub dataset id instead of synthetic text")
    data.add_argument("--data-path", help="a local dataset file (.jsonl/.csv/.parquet/...) or directory")
    data.add_argument(
        "--data-builtin",
        choices=BUILTIN,
        help="a prompt set shipped with speculators (each answer --output-tokens long)",
    )
    parser.add_argument("--profile", choices=PROFILES, default="sweep", help="GuideLLM's rate profile")
    parser.add_argument("--rate", type=float, nargs="+", default=[], help="requests/s (constant, poisson)")
    parser.add_argument("--sweep-size", type=int, default=10, help="benchmarks of a sweep (>= 3)")
    parser.add_argument("--max-seconds", type=float, help="duration of each rate")
    parser.add_argument("--max-requests", type=int, help="requests of each rate")
    parser.add_argument("--warmup-seconds", type=float, default=0, help="not counted at the start of a rate")
    parser.add_argument("--tokenizer", help="tokenizer (hub id or directory; default: the model name)")
    parser.add_argument("--random-seed", type=int, default=42)
    parser.add_argument("--metrics-url", help="vLLM /metrics of the server: acceptance over the run")
    parser.add_argument("--acceptance-out", type=Path, help="where the acceptance JSON goes")
    parser.add_argument(
        "--guidellm",
        default=os.environ.get("SPECULATORS_GUIDELLM", "guidellm"),
        help="GuideLLM command (env SPECULATORS_GUIDELLM; the image has its own venv for it)",
    )


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"--metrics-url {url}: {exc}") from exc


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from speculators_core.bench import guidellm
    from speculators_core.vllm_metrics.acceptance import counters_from_text, summarize

    if bool(args.metrics_url) != bool(args.acceptance_out):
        raise UserError("--metrics-url and --acceptance-out go together")
    if sum(map(bool, (args.data_hub_id, args.data_path, args.data_builtin))) > 1:
        raise UserError("pass one of --data-hub-id, --data-path and --data-builtin")
    data_path = args.data_path
    if args.data_builtin:
        data_path = str(guidellm.builtin_prompts(args.data_builtin, args.output_tokens, args.out))
    spec = guidellm.Run(
        target=args.target.rstrip("/"),
        model=args.model,
        data=guidellm.Data(args.prompt_tokens, args.output_tokens, args.data_hub_id, data_path),
        profile=args.profile,
        rates=tuple(args.rate),
        sweep_size=args.sweep_size,
        max_seconds=args.max_seconds,
        max_requests=args.max_requests,
        warmup_seconds=args.warmup_seconds,
        tokenizer=args.tokenizer,
        random_seed=args.random_seed,
    )
    try:
        spec.scenario(args.out)  # bad flags fail before anything is sent
    except guidellm.ScenarioError as exc:
        raise UserError(str(exc)) from exc
    if guidellm.is_report(args.out):
        print(f"{args.out}: already measured; skipped")
        return ExitCode.OK
    before = counters_from_text(scrape(args.metrics_url), args.model) if args.metrics_url else None
    try:
        guidellm.run(spec, args.out, args.guidellm)
    except FileNotFoundError as exc:
        raise UserError(f"--guidellm {args.guidellm!r}: {exc}") from exc
    except RuntimeError as exc:
        raise UserError(str(exc), ExitCode.FAILURE) from exc
    if args.metrics_url:
        after = counters_from_text(scrape(args.metrics_url), args.model)
        if after is None:
            print(f"{args.metrics_url}: no spec-decode counters (a server without a draft?)")
        else:
            delta = after if before is None or after.went_backwards(before) else after.minus(before)
            _write_json(args.acceptance_out, summarize(delta, window_seconds=0, pods=1, source="benchmark"))
    print(f"{args.out}: written")
    return ExitCode.OK
