#!/usr/bin/env bash
# Create an isolated virtual environment holding network-config-analyzer (nca).
#
# Why a separate venv: nca pins old versions of several libraries (z3-solver,
# PyYAML, networkx, ...) that must not leak into the netfence development
# environment. Idempotent: re-running only (re)installs if `nca` is missing or
# the requested version differs.
#
# Usage: benchmarks/setup_nca.sh [VENV_DIR]   (default: /work/.nca-venv)
# Env:   NCA_VERSION  pin a version (default: latest on PyPI)
#        PYTHON       interpreter for the venv (default: python3)
set -euo pipefail

VENV_DIR="${1:-${NCA_VENV:-/work/.nca-venv}}"
PYTHON="${PYTHON:-python3}"
SPEC="network-config-analyzer${NCA_VERSION:+==${NCA_VERSION}}"

if [[ ! -x "${VENV_DIR}/bin/python" ]]; then
    echo "creating venv ${VENV_DIR}" >&2
    "${PYTHON}" -m venv "${VENV_DIR}"
    "${VENV_DIR}/bin/python" -m pip install --quiet --upgrade pip
fi

installed="$("${VENV_DIR}/bin/python" -m pip show network-config-analyzer 2>/dev/null \
    | sed -n 's/^Version: //p' || true)"
if [[ -z "${installed}" || ( -n "${NCA_VERSION:-}" && "${installed}" != "${NCA_VERSION}" ) ]]; then
    echo "installing ${SPEC} into ${VENV_DIR}" >&2
    "${VENV_DIR}/bin/python" -m pip install --quiet "${SPEC}"
fi

"${VENV_DIR}/bin/python" -m pip show network-config-analyzer | sed -n 's/^Version: /nca version: /p'
test -x "${VENV_DIR}/bin/nca" || { echo "nca entry point missing in ${VENV_DIR}/bin" >&2; exit 1; }
echo "nca: ${VENV_DIR}/bin/nca"
