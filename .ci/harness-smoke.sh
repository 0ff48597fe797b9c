#!/usr/bin/env bash
# Runs every harness scenario for about a second through the built binary
# and checks each record: `pinned run` validates a record before writing it
# (counts add up, percentiles ordered, utilisation within 0..100%, stored
# histogram matches), and `pinned compare` re-reads it against the schema
# (unknown or missing fields are refused) and checks it again.
set -euo pipefail
cd "$(dirname "$0")/.."
# Any build will do (the model is tiny): the release binary if there is one,
# else the debug one `cargo test --workspace` leaves, else build it.
if [ -z "${PINNED:-}" ]; then
    for candidate in target/release/pinned target/debug/pinned; do
        if [ -x "$candidate" ]; then PINNED=$candidate; break; fi
    done
fi
if [ -z "${PINNED:-}" ]; then
    cargo build --bin pinned
    PINNED=target/debug/pinned
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
model=mlp:128x256x128
common=(--model "$model" --duration 1 --warmup 0.2 --min-count 100 --quiet --results "$out")

"$PINNED" run --scenario single-stream "${common[@]}"
"$PINNED" run --scenario offline "${common[@]}"
"$PINNED" run --scenario server --qps 300 "${common[@]}"
cat > "$out/two.toml" <<TOML
scenario = "multi-model"
[[partition]]
name = "a"
cpus = "+0"
model = "$model"
[[partition]]
name = "b"
cpus = "+0"
model = "$model"
qps = 200
TOML
"$PINNED" run --config "$out/two.toml" "${common[@]}"

records=("$out"/*.json)
# single-stream, offline, capacity is not run (qps given), server, multi-model.
[ "${#records[@]}" -eq 4 ] || { echo "expected 4 records, found ${#records[@]}"; exit 1; }
for r in "${records[@]}"; do
    "$PINNED" compare "$r" "$r" >/dev/null
    for key in '"machine"' '"latency_hdr_base64"' '"worker_stats"' '"cores"' '"git_revision"'; do
        grep -q "$key" "$r" || { echo "$r lacks $key"; exit 1; }
    done
    [ -s "${r%.json}.svg" ] || { echo "no plot beside $r"; exit 1; }
done
grep -q '"multi-model/server"' "$out"/*multi-model*.json
echo "harness smoke: ${#records[@]} records complete and consistent"
