"""Upstream speculators 0.9.0's DFlashConverter on a z-lab-layout checkpoint.

stdin: {"source": dir, "verifier": dir, "output": dir}
stdout: {"ok": true, "files": [...]}
"""

import json
import sys
from pathlib import Path

from speculators.convert.dflash import DFlashConverter

payload = json.load(sys.stdin)
DFlashConverter().convert(
    payload["source"], payload["output"], base_model=payload["verifier"], validate=False
)
print(json.dumps({"ok": True, "files": sorted(p.name for p in Path(payload["output"]).iterdir())}))
