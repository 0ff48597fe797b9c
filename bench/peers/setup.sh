#!/usr/bin/env bash
# Creates bench/peers/.venv with the pinned peer packages (requirements.txt).
# One command:  bash bench/peers/setup.sh
# Idempotent: an existing venv whose packages match is left as it is.
# PYTHON picks the interpreter (default python3, 3.11 or newer).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "setup.sh: $python is older than 3.11 (numpy $(grep numpy "$here/requirements.txt")) needs 3.11+); set PYTHON=..." >&2
    exit 1
fi
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$here/requirements.txt"; then
    echo "peer venv up to date: $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -c 'import onnxruntime, onnx, numpy, safetensors; print("onnxruntime", onnxruntime.__version__, "onnx", onnx.__version__, "numpy", numpy.__version__)'
cp "$here/requirements.txt" "$stamp"
echo "peer venv ready: $venv"
