"""Which options vLLM 0.33.0's own FlexibleArgumentParser sets for a `vllm serve` argument list.

The parser gets the operator's managed options (with vLLM's own names and short aliases) and a few
unmanaged ones; vLLM's normalisation ('_' as '-', --flag=value, dotted JSON keys) and argparse's prefix
matching then decide which options an extraArgs list sets.

stdin: {"managed": {"--flag": ["-alias", ...]}, "unmanaged": ["--flag", ...], "cases": [[arg, ...], ...]}
stdout: {"results": [{"set": [dest, ...]} | {"error": str}]}
"""

import json
import sys

from vllm.utils.argparse_utils import FlexibleArgumentParser

payload = json.load(sys.stdin)
parser = FlexibleArgumentParser(exit_on_error=False)
for flag, aliases in payload["managed"].items():
    parser.add_argument(flag, *aliases, dest="managed:" + flag)
for flag in payload["unmanaged"]:
    parser.add_argument(flag, nargs="?", const="")  # switches and valued options alike
results = []
for case in payload["cases"]:
    try:
        ns = vars(parser.parse_args(case))
        results.append({"set": sorted(k for k, v in ns.items() if v is not None)})
    except (SystemExit, Exception) as exc:  # argparse reports ambiguity/unknown options by exiting
        results.append({"error": f"{type(exc).__name__}: {exc}"})
print(json.dumps({"results": results}))
