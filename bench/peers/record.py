"""The run record (schema ``pinned-run/1``) as the Rust harness writes it,
for a run made in another engine.

Mirrors ``bench/src/harness/record.rs``, ``config.rs``, ``fingerprint.rs``
and ``cpu_usage.rs`` field by field. The harness refuses unknown fields and
checks the counts, so a drift in either side fails
``bench/tests/peer_record.rs``, which parses the committed example
``bench/peers/example-record.json`` with the harness's own reader.
"""

import json
import os
import platform
import socket
import time

SCHEMA = "pinned-run/1"

# The CPU features the harness lists (pinned_kernels::CpuFeatures::named),
# from /proc/cpuinfo's flag spelling.
_FEATURE_FLAGS = [
    ("sse4_2", "sse4_2"),
    ("avx2", "avx2"),
    ("fma", "fma"),
    ("avx512f", "avx512f"),
    ("avx512bw", "avx512bw"),
    ("avx512vl", "avx512vl"),
    ("avx512dq", "avx512dq"),
    ("avx512_vnni", "avx512_vnni"),
    ("avx512_bf16", "avx512_bf16"),
    ("avx512_fp16", "avx512_fp16"),
    ("amx_tile", "amx_tile"),
    ("amx_bf16", "amx_bf16"),
    ("amx_int8", "amx_int8"),
]


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def id_list(ids):
    """Kernel list form: ``0-3,8``."""
    ids = sorted(set(ids))
    parts, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def parse_id_list(text):
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return sorted(set(out))


def _cpuinfo_field(text, key):
    for line in (text or "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            if k.strip() == key:
                return v.strip()
    return None


def build_info(engine_versions):
    """``BuildInfo`` describing the peer instead of a Rust build."""
    return {
        "git_revision": _git_revision(),
        "git_tree": "unknown",
        "profile": "peer",
        "opt_level": "n/a",
        "debug_assertions": False,
        "target": f"{platform.machine()}-linux python",
        "target_features": "",
        "rustc": "n/a",
        "version": engine_versions,
    }


def _git_revision():
    here = os.path.dirname(os.path.abspath(__file__))
    head = _read(os.path.join(here, "..", "..", ".git", "HEAD"))
    if head and head.startswith("ref:"):
        ref = _read(os.path.join(here, "..", "..", ".git", head.split(":", 1)[1].strip()))
        return ref.strip()[:12] if ref else "unknown"
    return head.strip()[:12] if head else "unknown"


def fingerprint(engine_versions):
    """What ``Fingerprint::collect`` reads, from Python (the build is the peer's)."""
    cpuinfo = _read("/proc/cpuinfo") or ""
    flags = set((_cpuinfo_field(cpuinfo, "flags") or "").split())
    online = parse_id_list((_read("/sys/devices/system/cpu/online") or "0").strip())
    nodes = []
    node_root = "/sys/devices/system/node"
    synthesized = True
    if os.path.isdir(node_root):
        for name in sorted(os.listdir(node_root)):
            if not (name.startswith("node") and name[4:].isdigit()):
                continue
            synthesized = False
            nid = int(name[4:])
            cpus = (_read(f"{node_root}/{name}/cpulist") or "").strip()
            meminfo = _read(f"{node_root}/{name}/meminfo") or ""
            total = None
            for line in meminfo.splitlines():
                if "MemTotal:" in line:
                    total = int(line.split()[-2]) * 1024
            dist = [int(x) for x in (_read(f"{node_root}/{name}/distance") or "10").split()]
            nodes.append({"id": nid, "cpus": cpus, "mem_total_bytes": total, "distances": dist})
    if not nodes:
        nodes = [{"id": 0, "cpus": id_list(online), "mem_total_bytes": None, "distances": [10]}]

    def bracketed(text):
        if not text or "[" not in text:
            return None
        return text[text.index("[") + 1 : text.index("]")]

    def cache(level, kind):
        for idx in range(8):
            base = f"/sys/devices/system/cpu/cpu0/cache/index{idx}"
            if (_read(f"{base}/level") or "").strip() == str(level) and (_read(f"{base}/type") or "").strip() in kind:
                size = (_read(f"{base}/size") or "").strip()
                if size.endswith("K"):
                    return int(size[:-1]) * 1024
                if size.endswith("M"):
                    return int(size[:-1]) * 1024 * 1024
        return None

    govs = {}
    for cpu in online:
        g = _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
        if g:
            govs.setdefault(g.strip(), []).append(cpu)
    thp = "/sys/kernel/mm/transparent_hugepage"
    uname = os.uname()
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpuinfo_field(cpuinfo, "model name") or "unknown",
        "microcode": _cpuinfo_field(cpuinfo, "microcode"),
        "cpu_features": [name for name, flag in _FEATURE_FLAGS if flag in flags],
        "cache_l1d_bytes": cache(1, ("Data",)),
        "cache_l2_bytes": cache(2, ("Unified",)),
        "cache_l3_bytes": cache(3, ("Unified",)),
        "kernel": f"{uname.sysname} {uname.release} {uname.version}",
        "online_cpus": id_list(online),
        "allowed_cpus": id_list(os.sched_getaffinity(0)),
        "nodes": nodes,
        "topology_synthesized": synthesized,
        "thp_enabled": bracketed(_read(f"{thp}/enabled")),
        "thp_defrag": bracketed(_read(f"{thp}/defrag")),
        "governors": {g: id_list(c) for g, c in sorted(govs.items())},
        "build": build_info(engine_versions),
    }


def proc_stat():
    """``{cpu: (busy, user, system, total)}`` ticks from /proc/stat."""
    out = {}
    for line in (_read("/proc/stat") or "").splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        v = [int(x) for x in fields[1:]] + [0] * 8
        user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
        busy = user + nice + system + irq + softirq + steal
        out[int(fields[0][3:])] = (busy, user + nice, system, busy + idle + iowait)
    return out


def utilisation(before, after):
    """Per-core busy/user/system percentages between two ``proc_stat``s."""
    cores = []
    for cpu, b in sorted(after.items()):
        a = before.get(cpu)
        if a is None:
            continue
        total = b[3] - a[3]

        def pct(i):
            return 0.0 if total <= 0 else min(max((b[i] - a[i]) * 100.0 / total, 0.0), 100.0)

        cores.append({"cpu": cpu, "busy_pct": pct(0), "user_pct": pct(1), "system_pct": pct(2)})
    return cores


def thread_counters():
    """``{tid: (cpu_ns, voluntary, involuntary, migrations|None, last_cpu)}``
    for every thread of this process."""
    out = {}
    base = "/proc/self/task"
    for tid in os.listdir(base):
        schedstat = _read(f"{base}/{tid}/schedstat")
        status = _read(f"{base}/{tid}/status") or ""
        sched = _read(f"{base}/{tid}/sched") or ""
        stat = _read(f"{base}/{tid}/stat") or ""
        if schedstat is None:
            continue
        cpu_ns = int(schedstat.split()[0]) if schedstat.split() else 0
        vol = _cpuinfo_field(status, "voluntary_ctxt_switches")
        invol = _cpuinfo_field(status, "nonvoluntary_ctxt_switches")
        mig = _cpuinfo_field(sched, "se.nr_migrations")
        # Field 39 of stat (after the parenthesised name) is the last CPU.
        tail = stat.rsplit(")", 1)[-1].split()
        last_cpu = int(tail[36]) if len(tail) > 36 else None
        out[int(tid)] = (cpu_ns, int(vol or 0), int(invol or 0), int(mig) if mig else None, last_cpu)
    return out


def worker_stats(before, after, measured_s, requests_by_tid):
    """``WorkerStats`` for each thread alive across the window, in tid order."""
    stats = []
    for index, tid in enumerate(sorted(t for t in after if t in before)):
        a, b = before[tid], after[tid]
        cpu_ns = max(b[0] - a[0], 0)
        stats.append(
            {
                "index": index,
                "pinned_cpu": None,
                "last_cpu": b[4],
                "cpu_time_ms": cpu_ns / 1e6,
                "cpu_pct": cpu_ns / 1e9 / measured_s * 100.0,
                "voluntary_switches": max(b[1] - a[1], 0),
                "involuntary_switches": max(b[2] - a[2], 0),
                "migrations": (b[3] - a[3]) if (a[3] is not None and b[3] is not None) else None,
                "requests": requests_by_tid.get(tid, 0),
            }
        )
    return stats


def utc_stamp(unix_ms):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(unix_ms // 1000))


def sanitize(label):
    return "".join(c if (c.isascii() and c.isalnum()) or c in ".-" else "_" for c in label)


def record_id(started_unix_ms, scenario, label):
    stamp = utc_stamp(started_unix_ms)
    return f"{stamp}-{scenario}" + (f"-{sanitize(label)}" if label else "")


def write(record, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, record["id"] + ".json")
    with open(path, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    return path
