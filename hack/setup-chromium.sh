#!/usr/bin/env bash
# Headless Chromium for the report test (tests/bench: `speculators report`'s page rendered and
# screenshotted). Debian's `chromium` package; nothing to do when a Chromium is on PATH already.
# Needs root (or sudo) for apt-get; without either it says so and the test fails naming this script.
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null; then exit 0; fi
done
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "setup-chromium: no Chromium and no root to install it: apt-get install chromium" >&2; exit 0
fi
command -v apt-get >/dev/null || { echo "setup-chromium: no apt-get: install Chromium by hand" >&2; exit 0; }
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "setup-chromium: $(chromium --version 2>/dev/null | head -1)"
