"""HDR latency histograms that the Rust harness reads back exactly.

Same parameters as ``bench/src/harness/stats.rs`` (1 ns .. 1 h, three
significant digits), the same bucket arithmetic as the ``hdrhistogram``
crate (7.x), and its V2 deflate serial form, base64 (the record's
``latency_hdr_base64``). The summary follows ``LatencySummary::from_histogram``
to the nanosecond, so ``RunRecord::check`` (which recomputes the p99 from the
stored histogram) accepts what this module writes.
"""

import base64
import math
import struct
import zlib

LOWEST = 1
HIGHEST = 3_600_000_000_000  # HISTOGRAM_MAX_NS: one hour
SIGFIG = 3

# Derived exactly as Histogram::new_with_bounds does.
_UNIT_MAGNITUDE = int(math.floor(math.log2(LOWEST)))
_LARGEST_SINGLE_UNIT = 2 * 10**SIGFIG
_SUB_BUCKET_COUNT_MAGNITUDE = int(math.ceil(math.log2(_LARGEST_SINGLE_UNIT)))
_SUB_BUCKET_HALF_COUNT_MAGNITUDE = _SUB_BUCKET_COUNT_MAGNITUDE - 1
_SUB_BUCKET_COUNT = 1 << _SUB_BUCKET_COUNT_MAGNITUDE
_SUB_BUCKET_HALF_COUNT = _SUB_BUCKET_COUNT >> 1
_SUB_BUCKET_MASK = (_SUB_BUCKET_COUNT - 1) << _UNIT_MAGNITUDE
_LEADING_ZERO_COUNT_BASE = 64 - _UNIT_MAGNITUDE - _SUB_BUCKET_COUNT_MAGNITUDE


def _buckets_to_cover(value):
    smallest_untrackable = _SUB_BUCKET_COUNT << _UNIT_MAGNITUDE
    needed = 1
    while smallest_untrackable <= value:
        if smallest_untrackable > (2**64 - 1) // 2:
            return needed + 1
        smallest_untrackable <<= 1
        needed += 1
    return needed


_BUCKET_COUNT = _buckets_to_cover(HIGHEST)
_COUNTS_LEN = (_BUCKET_COUNT + 1) * _SUB_BUCKET_HALF_COUNT

_V2_COOKIE = 0x1C849303 | 0x10
_V2_COMPRESSED_COOKIE = 0x1C849304 | 0x10


def _leading_zeros(v):
    return 64 - v.bit_length()


def _bucket_for(value):
    return _LEADING_ZERO_COUNT_BASE - _leading_zeros(value | _SUB_BUCKET_MASK)


def index_for(value):
    bucket = _bucket_for(value)
    sub = value >> (bucket + _UNIT_MAGNITUDE)
    return ((bucket + 1) << _SUB_BUCKET_HALF_COUNT_MAGNITUDE) + sub - _SUB_BUCKET_HALF_COUNT


def value_for(index):
    bucket = (index >> _SUB_BUCKET_HALF_COUNT_MAGNITUDE) - 1
    sub = (index & (_SUB_BUCKET_HALF_COUNT - 1)) + _SUB_BUCKET_HALF_COUNT
    if bucket < 0:
        sub -= _SUB_BUCKET_HALF_COUNT
        bucket = 0
    return sub << (bucket + _UNIT_MAGNITUDE)


def lowest_equivalent(value):
    bucket = _bucket_for(value)
    return (value >> (bucket + _UNIT_MAGNITUDE)) << (bucket + _UNIT_MAGNITUDE)


def _equivalent_range(value):
    return 1 << (_UNIT_MAGNITUDE + _bucket_for(value))


def highest_equivalent(value):
    return lowest_equivalent(value) + _equivalent_range(value) - 1


def median_equivalent(value):
    return lowest_equivalent(value) + (_equivalent_range(value) >> 1)


class Histogram:
    """Counts per HDR bucket; values clamped into 1 ns .. 1 h like
    ``record_clamped``."""

    def __init__(self):
        self.counts = {}
        self.total = 0
        self.saturated = 0

    def record(self, ns):
        ns = int(ns)
        clamped = min(max(ns, LOWEST), HIGHEST)
        if clamped != max(ns, 1):
            self.saturated += 1
        i = index_for(clamped)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.total += 1

    def __len__(self):
        return self.total

    def _sorted(self):
        return sorted(self.counts.items())

    def max(self):
        return highest_equivalent(value_for(max(self.counts))) if self.counts else 0

    def min(self):
        if not self.counts or 0 in self.counts:
            return 0
        return lowest_equivalent(value_for(min(self.counts)))

    def value_at_quantile(self, q):
        q = min(q, 1.0)
        target = max(math.ceil(q * self.total), 1)
        running = 0
        for i, c in self._sorted():
            running += c
            if running >= target:
                v = value_for(i)
                return lowest_equivalent(v) if q == 0.0 else highest_equivalent(v)
        return 0

    def mean(self):
        if not self.total:
            return 0.0
        total = 0.0
        for i, c in self._sorted():
            total += median_equivalent(value_for(i)) * c / self.total
        return total

    def stdev(self):
        if not self.total:
            return 0.0
        mean = self.mean()
        acc = 0.0
        for i, c in self._sorted():
            dev = median_equivalent(value_for(i)) - mean
            acc += dev * dev * c
        return math.sqrt(acc / self.total)

    def summary(self):
        """``LatencySummary`` as the harness computes it (all zero when empty)."""
        if not self.total:
            keys = ("count", "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns")
            out = {k: 0 for k in keys}
            out.update(mean_ns=0.0, stddev_ns=0.0, cv=0.0)
            return out
        top = self.max()
        at = lambda q: min(self.value_at_quantile(q), top)  # noqa: E731
        mean, sd = self.mean(), self.stdev()
        return {
            "count": self.total,
            "min_ns": self.min(),
            "p50_ns": at(0.50),
            "p90_ns": at(0.90),
            "p99_ns": at(0.99),
            "p999_ns": at(0.999),
            "max_ns": top,
            "mean_ns": mean,
            "stddev_ns": sd,
            "cv": sd / mean if mean > 0 else 0.0,
        }

    def _encode_counts(self):
        out = bytearray()
        if not self.counts:
            # The crate encodes up to index_for(max()) = index 0 when empty.
            limit = 0
        else:
            limit = index_for(self.max())
        i = 0
        while i <= limit:
            c = self.counts.get(i, 0)
            i += 1
            if c == 0:
                zeros = 1
                while i <= limit and self.counts.get(i, 0) == 0:
                    zeros += 1
                    i += 1
                word = -zeros if zeros > 1 else 0
            else:
                word = c
            _varint(_zigzag(word), out)
        return bytes(out)

    def encode_base64(self):
        """V2 deflate serial form, base64 (``record::encode_histogram``)."""
        counts = self._encode_counts()
        header = struct.pack(
            ">IIIIQQd", _V2_COOKIE, len(counts), 0, SIGFIG, LOWEST, HIGHEST, 1.0
        )
        body = zlib.compress(header + counts)
        packed = struct.pack(">II", _V2_COMPRESSED_COOKIE, len(body)) + body
        return base64.b64encode(packed).decode("ascii")


def _zigzag(n):
    return ((n << 1) ^ (n >> 63)) & (2**64 - 1)


def _varint(v, out):
    """LEB128-64b9B: seven bits a byte, the ninth byte whole."""
    for _ in range(8):
        if v < 0x80:
            out.append(v)
            return
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    out.append(v & 0xFF)
