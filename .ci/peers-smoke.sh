#!/usr/bin/env bash
# Seconds-long check that the ONNX Runtime peer cannot rot: creates the peer
# venv if missing (PyPI), runs the peer's unit tests (with the MiniLM fixture
# check when PINNED_MINILM_DIR is set), then `pinned bench e2e` on a tiny MLP,
# one scenario, one A B round. It checks that both sides run and write
# records the harness reads; it asserts no timing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash bench/peers/setup.sh
bench/peers/.venv/bin/python -m unittest discover -s bench/peers -p 'test_*.py'

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --quiet -p pinned -- bench e2e --peer onnxruntime \
    --model mlp:64x256x64 --scenario single-stream --batch 1 \
    --rounds 1 --duration 0.5 --warmup 0.2 --min-count 50 --out "$out"
records=$(ls "$out"/*.json | grep -vc machine.json)
if [ "$records" -lt 2 ]; then
    echo "peers-smoke: expected a pinned and a peer record in $out, found $records" >&2
    exit 1
fi
echo "peers-smoke: ok ($records records)"
