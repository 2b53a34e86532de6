# Sourced by the set-up scripts of venvs laid over .venv (.venv-compat, .venv-bench).
# overlay_fresh BASE DIR SCRIPT: exit 0 from the caller when DIR was set up by this very SCRIPT over
#   this BASE (its stamp); otherwise sets OVERLAY_STAMP for overlay_done.
# overlay_venv BASE DIR: DIR a venv that sees BASE's packages through a .pth file (pip treats them as
#   installed), created if missing.
# overlay_done DIR: record the stamp once the set-up has succeeded.

overlay_fresh() {
  OVERLAY_STAMP=$({ cat "$3"; cat "$1/.setup-stamp" 2>/dev/null || true; } | sha256sum | cut -c1-16)
  [ -f "$2/.setup-stamp" ] && [ "$(cat "$2/.setup-stamp")" = "$OVERLAY_STAMP" ]
}

overlay_venv() {
  [ -x "$2/bin/python" ] || "$1/bin/python" -m venv "$2"
  local base_site dir_site
  base_site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  dir_site=$("$2/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # addsitedir (not a bare path) so BASE's own .pth files (the editable install of this project) apply
  # too; appended after DIR's site-packages, so what is installed in DIR wins.
  echo "import site; site.addsitedir('$(cd "$base_site" && pwd)')" > "$dir_site/_base_venv.pth"
}

overlay_done() {
  echo "$OVERLAY_STAMP" > "$1/.setup-stamp"
}
