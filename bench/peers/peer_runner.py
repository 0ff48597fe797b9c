"""Runs the harness's scenarios in ONNX Runtime and writes the same JSON
record as ``pinned run`` (schema ``pinned-run/1``), so ``pinned compare``
and the plots read it unchanged.

Same model (an ONNX graph built in memory from the very same safetensors
weights, ``build_onnx.py``), same CPU set (the process's affinity, set for
every thread before the session starts its pool), intra-op threads = the
workers pinned would use, and ORT's best settings for the case: every graph
optimisation on, and intra-op spinning tried on and off with the better one
kept (``--spinning both``, the default).

Scenarios, as in ``bench/src/harness/scenario.rs``:
- ``single-stream``: closed loop, one request at a time.
- ``server``: Poisson arrivals at ``--qps`` (the harness's SplitMix64
  schedule, so the same seed gives the same send times), latency counted
  from the scheduled send (coordinated omission corrected). Requests
  waiting when the engine frees up go in one batch of up to ``--batch``.
- ``offline``: ``slots_for(batch)`` requests always queued; batches of ``--batch``.

A request is one sample (an MLP input row, one MiniLM sequence), as in
pinned, so TPS counts samples in both records.

    peer_runner.py --model MANIFEST.json|MINILM_DIR --scenario single-stream \\
        --cpus 0-1 --workers 2 --duration 10 --out results/
"""

import argparse
import collections
import math
import os
import platform
import sys
import time

import numpy as np

import build_onnx
import record
from hdr import Histogram

# Requests waiting at most: this, or one batch if larger (the harness's
# least, scenario.rs SLOTS). This loop refills them while no batch runs, so a
# free engine always finds a full batch: scenario.rs slots_for gives the
# harness's workers the same.
SLOTS = 64


def slots_for(batch):
    return max(SLOTS, batch)
Z_99 = 2.5758293  # stats.rs: min_samples_for_quantile
SPIN_BELOW_NS = 200_000  # below this gap the host spins (scenario.rs)


def min_samples_for_quantile(q):
    return math.ceil(Z_99 * Z_99 * q / (1.0 - q))


class SplitMix64:
    """``harness::stats::SplitMix64``, bit for bit."""

    MASK = 2**64 - 1

    def __init__(self, seed):
        self.state = seed & self.MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & self.MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
        return z ^ (z >> 31)

    def next_f64(self):
        return (self.next_u64() >> 11) / float(1 << 53)


class PoissonSchedule:
    """``harness::loadgen::PoissonSchedule``: the same send times for the
    same rate, start and seed."""

    def __init__(self, rate_per_s, start_ns, seed):
        self.mean_gap_ns = 1e9 / max(rate_per_s, 1e-9)
        self.rng = SplitMix64(seed)
        self.next_ns = float(start_ns)
        self.next_ns += self._gap()

    def _gap(self):
        return -math.log(1.0 - self.rng.next_f64()) * self.mean_gap_ns

    def peek_ns(self):
        return int(self.next_ns)

    def take(self):
        t = int(self.next_ns)
        self.next_ns += self._gap()
        return t


class Engine:
    """One ONNX Runtime session over a model, with IO bound per batch size."""

    def __init__(self, model_bytes, kind, width, seq, workers, spinning):
        import onnxruntime as ort

        self.ort = ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = workers
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        flag = "1" if spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", flag)
        so.add_session_config_entry("session.inter_op.allow_spinning", flag)
        self.session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        self.kind, self.width, self.seq = kind, width, seq
        self.bindings = {}

    def _inputs(self, n):
        if self.kind == "mlp":
            # The harness fills every request with 0.5 (scenario.rs).
            return {"x": np.full((n, self.width), 0.5, dtype=np.float32)}
        ids = minilm_ids(self.seq)
        return {
            "input_ids": np.tile(ids, (n, 1)),
            "attention_mask": np.ones((n, self.seq), dtype=np.int64),
        }

    def run(self, n):
        """Runs one batch of ``n`` requests; returns the output array."""
        b = self.bindings.get(n)
        if b is None:
            b = self.session.io_binding()
            keep = self._inputs(n)
            for name, arr in keep.items():
                b.bind_cpu_input(name, arr)
            out = self.session.get_outputs()[0].name
            b.bind_output(out, "cpu")
            self.bindings[n] = (b, keep)
        else:
            b = b[0]
        self.session.run_with_iobinding(b)
        return b


def minilm_ids(seq):
    """A ``seq``-token request: [CLS], word pieces, [SEP] (the values do not
    change the work; the length does)."""
    body = [(2000 + 37 * i) % 28000 + 1000 for i in range(max(seq - 2, 0))]
    return np.array(([101] + body + [102])[:seq], dtype=np.int64)


class Recorder:
    """``loadgen::Recorder`` plus the worker-side queue/service split."""

    def __init__(self, measure_from):
        self.measure_from = measure_from
        self.latency, self.issue_delay = Histogram(), Histogram()
        self.queue_wait, self.service = Histogram(), Histogram()
        self.completed = self.warmup_completed = 0

    def record(self, scheduled, issued, started, done):
        if scheduled < self.measure_from:
            self.warmup_completed += 1
            return
        self.completed += 1
        self.latency.record(max(done - scheduled, 0))
        self.issue_delay.record(max(issued - scheduled, 0))
        self.queue_wait.record(max(started - issued, 0))
        self.service.record(max(done - started, 0))


def drive(engine, scenario, opts, qps, measure_from, t0, on_window):
    """One measured run; returns (recorder, offered, issued, window_s).
    ``on_window(start|end)`` is called when the window opens and closes."""
    now = time.monotonic_ns
    rec = Recorder(measure_from)
    offered = issued = 0
    window_start = None
    min_end = max_end = None
    # Warm-up requests still waiting when the window opens (record.rs
    # `carried_in`): served inside it, not measured.
    carried_in = 0
    backlog = collections.deque()  # scheduled times not yet in a slot
    queue = collections.deque()  # (scheduled, issued) holding a slot

    def window_check():
        nonlocal window_start, min_end, max_end, carried_in
        t = now()
        if window_start is None:
            if t < measure_from:
                return False
            window_start = t
            carried_in = sum(1 for s in backlog if s < measure_from)
            carried_in += sum(1 for s, _ in queue if s < measure_from)
            min_end = t + int(opts.duration * 1e9)
            max_end = t + int(max(opts.max_duration, opts.duration) * 1e9)
            on_window("start")
            return False
        return (t >= min_end and rec.completed >= opts.min_count) or t >= max_end

    if scenario == "single-stream":
        while True:
            sent = now()
            engine.run(1)
            done = now()
            if sent >= measure_from:
                offered += 1
                issued += 1
            rec.record(sent, sent, sent, done)
            if window_check():
                break
        window_end = now()
        on_window("end")
        return rec, offered, issued, carried_in, (window_end - window_start) / 1e9

    schedule = PoissonSchedule(qps, t0, opts.seed) if scenario == "server" else None
    stopping = False
    window_end = None
    max_wait_ns = opts.max_wait_us * 1000
    while True:
        t = now()
        if not stopping:
            if schedule is not None:
                while schedule.peek_ns() <= t:
                    s = schedule.take()
                    if s >= measure_from:
                        offered += 1
                    backlog.append(s)
            else:
                while len(backlog) + len(queue) < slots_for(opts.batch):
                    backlog.append(t)
        while backlog and len(queue) < slots_for(opts.batch):
            s = backlog.popleft()
            s = s if schedule is not None else t
            if s >= measure_from:
                issued += 1
                if schedule is None:
                    offered += 1
            queue.append((s, t))
        if queue:
            short = len(queue) < opts.batch and not stopping
            if short and max_wait_ns and queue[0][1] + max_wait_ns > t:
                # The batch policy waits up to max_wait for more requests.
                nxt = queue[0][1] + max_wait_ns
                if schedule is not None:
                    nxt = min(nxt, schedule.peek_ns())
                idle(nxt)
            else:
                n = min(opts.batch, len(queue))
                batch = [queue.popleft() for _ in range(n)]
                started = now()
                engine.run(n)
                done = now()
                for s, i in batch:
                    rec.record(s, i, started, done)
        elif stopping:
            break
        else:
            idle(schedule.peek_ns() if schedule is not None else t)
        if not stopping and window_check():
            stopping = True
            window_end = now()
            on_window("end")
    return rec, offered, issued, carried_in, (window_end - window_start) / 1e9


def idle(until_ns):
    """Sleep until shortly before ``until_ns``, spin the rest (a sleep
    overshoots by tens of microseconds)."""
    gap = until_ns - time.monotonic_ns()
    if gap > SPIN_BELOW_NS:
        time.sleep(min(gap - SPIN_BELOW_NS // 2, 10_000_000) / 1e9)


def measure(engine, scenario, opts, qps, warmup, seed_offset=0):
    """Runs ``scenario`` with a warm-up; returns the partition result parts."""
    state = {}

    def on_window(edge):
        state[edge] = (record.proc_stat(), record.thread_counters())

    t0 = time.monotonic_ns()
    measure_from = t0 + int(warmup * 1e9)
    rec, offered, issued, carried_in, window_s = drive(engine, scenario, opts, qps, measure_from, t0, on_window)
    return rec, offered, issued, carried_in, window_s, state


def choose_spinning(model_bytes, kind, width, opts, scenario, qps):
    """Tries intra-op spinning on and off on a short run; the better wins
    (mean latency for latency scenarios, TPS offline)."""
    if opts.spinning != "both":
        return opts.spinning == "on", ""
    trial = argparse.Namespace(**vars(opts))
    trial.duration, trial.max_duration, trial.min_count = opts.trial, opts.trial * 4, 0
    results = {}
    for spin in (True, False):
        engine = Engine(model_bytes, kind, width, opts.seq, opts.workers, spin)
        rec, _, _, _, window_s, _ = measure(engine, scenario, trial, qps, min(opts.warmup, 0.5))
        del engine
        s = rec.latency.summary()
        results[spin] = (s["mean_ns"], rec.completed / window_s)
    if scenario == "offline":
        best = results[True][1] >= results[False][1]
        note = f"trial tps: spinning on {results[True][1]:.1f}, off {results[False][1]:.1f}"
    else:
        best = results[True][0] <= results[False][0]
        note = f"trial mean: spinning on {results[True][0] / 1e3:.1f} us, off {results[False][0] / 1e3:.1f} us"
    return best, note


def load_model(path, seq):
    """(onnx bytes, kind, input width, model description)."""
    if os.path.isdir(path):
        model, cfg = build_onnx.build_minilm(path)
        name = f"minilm-{cfg['num_hidden_layers']}l-{cfg['hidden_size']}h-f32 seq {seq}"
        return model.SerializeToString(), "minilm", cfg["hidden_size"], name
    model, widths = build_onnx.build_mlp(path)
    name = "mlp-" + "-".join(map(str, widths)) + "-f32"
    return model.SerializeToString(), "mlp", widths[0], name


def pin_process(cpus):
    """Affinity for every thread of the process (the ORT pool inherits it)."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), cpus)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="MLP manifest (JSON) or MiniLM directory")
    ap.add_argument("--scenario", default="single-stream", choices=["single-stream", "server", "offline"])
    ap.add_argument("--cpus", help="taskset -c list; default: this process's affinity")
    ap.add_argument("--workers", type=int, help="intra-op threads; default one per CPU")
    ap.add_argument("--batch", type=int, default=1, help="largest batch formed from waiting requests")
    ap.add_argument("--max-wait-us", type=int, default=0, help="how long a short batch waits to fill")
    ap.add_argument("--seq", type=int, default=128, help="MiniLM tokens per request")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--min-count", type=int, default=min_samples_for_quantile(0.99))
    ap.add_argument("--max-duration", type=float, default=120.0)
    ap.add_argument("--qps", type=float, help="server arrival rate; default load x measured capacity")
    ap.add_argument("--load", type=float, default=0.7, help="server load as a fraction of capacity")
    ap.add_argument("--seed", type=int, default=0x5EED)
    ap.add_argument("--spinning", default="both", choices=["on", "off", "both"])
    ap.add_argument("--trial", type=float, default=1.5, help="seconds per spinning trial")
    ap.add_argument("--label", default="onnxruntime")
    ap.add_argument("--machine", help="fingerprint JSON to store (the build part is replaced)")
    ap.add_argument("--out", default="results", help="directory for the record")
    ap.add_argument("--quiet", action="store_true")
    opts = ap.parse_args(argv)
    if opts.precision not in ("f32", "fp32"):
        ap.error("the ONNX Runtime peer runs fp32 (its best CPU precision is the baseline)")
    if opts.batch < 1 or (opts.workers is not None and opts.workers < 1):
        ap.error("--batch and --workers must be >= 1")
    return opts


def main(argv=None):
    opts = parse_args(argv)
    import json

    import onnx
    import onnxruntime as ort

    cpus = record.parse_id_list(opts.cpus) if opts.cpus else sorted(os.sched_getaffinity(0))
    pin_process(cpus)
    opts.workers = opts.workers or len(cpus)
    versions = f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, python {platform.python_version()}"
    started_unix_ms = int(time.time() * 1000)
    model_bytes, kind, width, model_name = load_model(opts.model, opts.seq)

    qps = opts.qps
    if opts.scenario == "server" and qps is None:
        spin, _ = choose_spinning(model_bytes, kind, width, opts, "offline", None)
        cap = argparse.Namespace(**vars(opts))
        cap.duration, cap.min_count = max(opts.trial, 1.0), 0
        engine = Engine(model_bytes, kind, width, opts.seq, opts.workers, spin)
        rec, _, _, _, window_s, _ = measure(engine, "offline", cap, None, min(opts.warmup, 0.5))
        del engine
        qps = opts.load * rec.completed / window_s
    spin, note = choose_spinning(model_bytes, kind, width, opts, opts.scenario, qps)
    engine = Engine(model_bytes, kind, width, opts.seq, opts.workers, spin)
    rec, offered, issued, carried_in, window_s, state = measure(engine, opts.scenario, opts, qps, opts.warmup)
    main_tid = os.getpid()
    threads = record.worker_stats(state["start"][1], state["end"][1], window_s, {main_tid: rec.completed})
    label = f"{opts.label} spinning={'on' if spin else 'off'}" + (f" ({note})" if note else "")

    if opts.machine:
        with open(opts.machine) as f:
            machine = json.load(f)
        machine["build"] = record.build_info(versions)
    else:
        machine = record.fingerprint(versions)
    latency = rec.latency.summary()
    partition = {
        "name": "p0",
        "scenario": opts.scenario,
        "model": f"{opts.model} (onnxruntime {ort.__version__} {model_name})",
        "cpus": record.id_list(cpus),
        "workers": opts.workers,
        "pinned": False,
        "measured_s": window_s,
        "offered": offered,
        "issued": issued,
        "completed": rec.completed,
        "warmup_completed": rec.warmup_completed,
        "rejected": 0,
        "carried_in": carried_in,
        "offered_qps": qps if opts.scenario == "server" else None,
        "tps": rec.completed / window_s,
        "latency": latency,
        "issue_delay": rec.issue_delay.summary(),
        "queue_wait": rec.queue_wait.summary(),
        "service": rec.service.summary(),
        "slots": slots_for(opts.batch),
        "enough_for_p99": rec.completed >= min_samples_for_quantile(0.99),
        "enough_for_p999": rec.completed >= min_samples_for_quantile(0.999),
        "latency_hdr_base64": rec.latency.encode_base64(),
        "worker_stats": threads,
        "placement": [],
    }
    config = {
        "scenario": opts.scenario,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "min_count": opts.min_count,
        "max_duration_s": opts.max_duration,
        "load_fraction": opts.load,
        "seed": opts.seed,
        "partitions": [
            {
                "name": "p0",
                "cpus": opts.cpus,
                "pin": False,
                "workers": opts.workers,
                "memory": {"policy": "local"},
                "batch": opts.batch,
                "max_wait_us": opts.max_wait_us,
                "wait": "spin" if spin else "park",
                "model": opts.model,
                "precision": "f32",
                "qps": qps if opts.scenario == "server" else None,
            }
        ],
    }
    rec_json = {
        "schema": record.SCHEMA,
        "id": record.record_id(started_unix_ms, opts.scenario, label.split(" (")[0]),
        "started_unix_ms": started_unix_ms,
        "label": label,
        "config": config,
        "machine": machine,
        "cores": record.utilisation(state["start"][0], state["end"][0]),
        "partitions": [partition],
    }
    path = record.write(rec_json, opts.out)
    if not opts.quiet:
        print(
            f"{opts.scenario} {model_name} on cpus {record.id_list(cpus)}, {opts.workers} threads, {label}: "
            f"p50 {latency['p50_ns'] / 1e3:.1f} us, p99 {latency['p99_ns'] / 1e3:.1f} us, "
            f"tps {partition['tps']:.1f} ({rec.completed} in {window_s:.2f} s)",
            file=sys.stderr,
        )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
