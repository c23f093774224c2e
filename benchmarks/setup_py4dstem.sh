#!/usr/bin/env bash
# Prepares the py4DSTEM ptychography peer (benchmarks/_peer_py4dstem.py): a venv of its
# own, .venv-py4dstem at the repository root (never the project's .venv: py4DSTEM 0.14
# pins numpy 1.26). Idempotent; a second run only checks and exits.
#
#   bash benchmarks/setup_py4dstem.sh
#   .venv/bin/python benchmarks/bench_ptycho_peer.py          # makes the data, runs both
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-py4dstem"
# The version measured when this script was written; PY4DSTEM_SPEC=py4DSTEM tries the newest.
SPEC="${PY4DSTEM_SPEC:-py4DSTEM==0.14.18}"

if ! command -v uv >/dev/null 2>&1; then
    echo "setup_py4dstem: uv is needed (https://docs.astral.sh/uv/)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    # uv writes a .gitignore of '*' into the venv, so git never sees it.
    # Python 3.11 (py4DSTEM 0.14 supports 3.9-3.12); PY4DSTEM_PYTHON picks another
    uv venv -q -p "${PY4DSTEM_PYTHON:-3.11}" "$VENV"
fi
if ! "$VENV/bin/python" -c "import py4DSTEM.process.phase" >/dev/null 2>&1; then
    uv pip install -q -p "$VENV" "$SPEC"
fi
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print(f"setup_py4dstem: py4DSTEM {version('py4DSTEM')}, numpy {version('numpy')}, "
      f"scipy {version('scipy')} ready")
EOF
