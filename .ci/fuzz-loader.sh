#!/usr/bin/env bash
# Fuzzes the safetensors loader (runtime/fuzz, target load_safetensors) for
# a bounded time. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. Seeds the corpus with a valid small file.
#
#   .ci/fuzz-loader.sh [seconds]   (default 60)
set -euo pipefail
secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

corpus="$root/runtime/fuzz/corpus/load_safetensors"
mkdir -p "$corpus"
# A valid seed: one F32 tensor (the tests cover full tiny-BERT files).
python3 - "$corpus/seed-one-tensor" <<'PY'
import json, struct, sys
header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0))
PY

cd "$root/runtime"
cargo fuzz run load_safetensors "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536
