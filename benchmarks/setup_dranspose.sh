#!/usr/bin/env bash
# Prepares the dranspose peer benchmark (benchmarks/_peer_dranspose.py): a venv of its own,
# .venv-dranspose at the repository root (never the project's .venv: dranspose pins its own
# FastAPI/pydantic/redis stack), and a redis-server binary, which dranspose needs for its
# control plane. Idempotent; a second run only checks and exits.
#
#   bash benchmarks/setup_dranspose.sh
#   .venv-dranspose/bin/python benchmarks/_peer_dranspose.py --events 2000 --det 64 --workers 1 --json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-dranspose"
# The version measured when this script was written; DRANSPOSE_SPEC=dranspose tries the newest.
SPEC="${DRANSPOSE_SPEC:-dranspose==0.2.0}"

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup_dranspose: redis-server is missing and cannot be installed here" \
             "(needs root and apt-get); install redis-server and rerun" >&2
        exit 1
    fi
    echo "setup_dranspose: installing redis-server (Debian package)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# Debian's package starts a system-wide server on 6379; the benchmark never uses it (it
# starts its own on a free port, without persistence), so it is left as the package set it.

if ! command -v uv >/dev/null 2>&1; then
    echo "setup_dranspose: uv is needed (https://docs.astral.sh/uv/)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    # uv writes a .gitignore of '*' into the venv, so git never sees it.
    # Python 3.11 as the project's own venv; DRANSPOSE_PYTHON picks another (dranspose >= 3.10)
    uv venv -q -p "${DRANSPOSE_PYTHON:-3.11}" "$VENV"
fi
if ! "$VENV/bin/python" -c "import dranspose, zmq, numpy" >/dev/null 2>&1; then
    uv pip install -q -p "$VENV" "$SPEC"
fi
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print(f"setup_dranspose: dranspose {version('dranspose')}, pyzmq {version('pyzmq')}, "
      f"numpy {version('numpy')} ready")
EOF
redis-server --version
