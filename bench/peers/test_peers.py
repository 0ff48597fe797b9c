"""Tests of the peer's pieces that must agree with the Rust side exactly:
the SplitMix64 / Poisson schedule, the HDR histogram arithmetic and
encoding, and the ONNX graphs against plain numpy and the MiniLM fixture.

    bench/peers/.venv/bin/python -m unittest discover -s bench/peers -p 'test_*.py'
"""

import base64
import json
import os
import struct
import tempfile
import unittest
import zlib

import numpy as np

import build_onnx
import hdr
import peer_runner

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "..", "tests", "fixtures", "minilm", "reference.json")


class SplitMixTest(unittest.TestCase):
    def test_first_values_match_the_reference_generator(self):
        # SplitMix64 seeded with 0 (Steele, Lea, Flood; the values every
        # implementation, including harness::stats::SplitMix64, produces).
        r = peer_runner.SplitMix64(0)
        self.assertEqual(r.next_u64(), 0xE220A8397B1DCDAF)
        self.assertEqual(r.next_u64(), 0x6E789E6AA1B965F4)
        self.assertEqual(r.next_u64(), 0x06C45D188009454F)

    def test_poisson_schedule_is_monotonic_with_the_right_mean(self):
        s = peer_runner.PoissonSchedule(1000.0, 0, 7)
        times = [s.take() for _ in range(20000)]
        self.assertTrue(all(a <= b for a, b in zip(times, times[1:])))
        # 20k exponential gaps: relative standard error 0.7%, 5% is > 7 sigma.
        self.assertAlmostEqual(times[-1] / 20000 / 1e6, 1.0, delta=0.05)


class HdrTest(unittest.TestCase):
    def test_bucket_arithmetic(self):
        # Three significant digits: values below 2048 are exact.
        for v in (1, 2, 1000, 2047):
            self.assertEqual(hdr.value_for(hdr.index_for(v)), v)
            self.assertEqual(hdr.highest_equivalent(v), v)
        v = 1_234_567
        lo, hi = hdr.lowest_equivalent(v), hdr.highest_equivalent(v)
        self.assertTrue(lo <= v <= hi)
        self.assertLess((hi - lo) / v, 1e-3)
        self.assertEqual(hdr.value_for(hdr.index_for(v)), lo)

    def test_summary_orders_and_counts(self):
        h = hdr.Histogram()
        for v in range(1, 1001):
            h.record(v * 1000)
        s = h.summary()
        self.assertEqual(s["count"], 1000)
        order = [s[k] for k in ("min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns")]
        self.assertEqual(order, sorted(order))
        self.assertAlmostEqual(s["p50_ns"] / 500_000, 1.0, delta=1e-3)
        self.assertAlmostEqual(s["mean_ns"] / 500_500, 1.0, delta=1e-3)

    def test_encoding_layout(self):
        h = hdr.Histogram()
        for v in (5, 5, 7, 3000):
            h.record(v)
        raw = base64.b64decode(h.encode_base64())
        cookie, length = struct.unpack(">II", raw[:8])
        self.assertEqual(cookie, 0x1C849314)
        self.assertEqual(length, len(raw) - 8)
        body = zlib.decompress(raw[8:])
        cookie, payload, _, sigfig, lowest, highest, ratio = struct.unpack(">IIIIQQd", body[:40])
        self.assertEqual((cookie, sigfig, lowest, highest, ratio), (0x1C849313, 3, 1, hdr.HIGHEST, 1.0))
        self.assertEqual(payload, len(body) - 40)
        # Zero runs zig-zag to odd words, counts to even ones: 5 zeros (-5 -> 9), then 2.
        self.assertEqual(body[40:42], bytes([9, 4]))
        self.assertEqual(hdr.Histogram().summary()["count"], 0)


class GraphTest(unittest.TestCase):
    def test_mlp_graph_matches_numpy(self):
        import onnxruntime as ort
        from safetensors.numpy import save_file

        rng = np.random.default_rng(3)
        with tempfile.TemporaryDirectory() as d:
            widths = [12, 40, 7]
            tensors, layers = {}, []
            for i, (k, n) in enumerate(zip(widths, widths[1:])):
                tensors[f"fc{i}.weight"] = rng.standard_normal((n, k)).astype(np.float32) / np.sqrt(k)
                tensors[f"fc{i}.bias"] = rng.standard_normal(n).astype(np.float32) * 0.1
                layers.append({"weight": f"fc{i}.weight", "bias": f"fc{i}.bias", "activation": "gelu" if i == 0 else "none"})
            save_file(tensors, os.path.join(d, "w.safetensors"))
            manifest = os.path.join(d, "m.json")
            with open(manifest, "w") as f:
                json.dump({"weights": "w.safetensors", "layers": layers}, f)
            model, got_widths = build_onnx.build_mlp(manifest)
            self.assertEqual(got_widths, widths)
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            x = rng.standard_normal((5, 12)).astype(np.float32)
            (y,) = sess.run(None, {"x": x})
            np.testing.assert_allclose(y, build_onnx.mlp_reference(manifest, x), atol=1e-5)

    @unittest.skipUnless(os.environ.get("PINNED_MINILM_DIR"), "PINNED_MINILM_DIR not set (.ci/fetch-minilm.sh)")
    def test_minilm_graph_matches_the_reference_fixture(self):
        model, _ = build_onnx.build_minilm(os.environ["PINNED_MINILM_DIR"])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "minilm.onnx")
            import onnx

            onnx.save(model, path)
            worst, n = build_onnx.check_minilm(path, FIXTURE)
        self.assertGreater(n, 0)
        self.assertLess(worst, 1e-4)


if __name__ == "__main__":
    unittest.main()
