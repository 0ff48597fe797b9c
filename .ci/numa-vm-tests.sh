#!/usr/bin/env bash
# Two-node NUMA placement tests for pinned-allocator (allocator/tests/numa_vm.rs).
# Builds the test binary on the host, then runs it inside a throw-away QEMU VM
# with two emulated NUMA nodes (../shared/numa-vm/run-in-numa-vm, beside the
# repository). Installs the VM's packages when missing (needs root then).
# Exits non-zero when a test fails or the VM does not come up.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runner="$(dirname "$repo")/shared/numa-vm/run-in-numa-vm"
if [ ! -f "$runner" ]; then
    echo "numa-vm-tests: $runner not found (shared/ must sit beside the repository)" >&2
    exit 1
fi

packages=(qemu-system-x86 busybox-static cpio linux-image-amd64 xz-utils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "numa-vm-tests: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "numa-vm-tests: need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

cd "$repo"
# Runs one test binary (the last "executable" cargo reports) in a 2-node VM.
run_in_vm() {
    local exe
    exe=$(cargo test -p "$1" --test "$2" --no-run --message-format=json \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    if [ -z "$exe" ] || [ ! -x "$exe" ]; then
        echo "numa-vm-tests: could not find the $1 $2 test binary" >&2
        exit 1
    fi
    echo "numa-vm-tests: running $exe in a 2-node VM"
    # One test thread: the tests fill node memory and must not overlap.
    bash "$runner" --nodes 2 --cpus 2 --mem-per-node 512 -- "$exe" --test-threads=1 --nocapture
}
# Regions, interleave, preferred fallback, replication, migration.
run_in_vm pinned-allocator numa_vm
# Each node's partition serves from its own memory, workers on its CPUs.
run_in_vm pinned-runtime numa
