"""stats(): the binding's counters equal the store's own for the same accesses."""

import pytest

import tinyai
import tinyai._testing as testing
from conftest import MIB, file_layers

KEYS = {
    "hits", "misses", "bypasses", "bytes_read", "evictions", "prefetch_issued", "prefetch_used",
    "prefetch_wasted", "prefetch_cancelled", "checksum_failures", "checksums_verified", "load_time",
    "cached_bytes", "transient_bytes", "reclaim_pending_bytes", "hit_ratio",
    "io_bandwidth", "io_latency", "io_depth", "buffers_reused", "buffers_allocated", "pooled_bytes",
    "layers_without_checksum",
}
# Measured from the device's timing: they differ between two runs of the same accesses.
TIMED = {"load_time", "io_bandwidth", "io_latency", "io_depth"}


def drive(path, accesses, **arguments):
    with tinyai.open(path, **arguments) as model:
        for index in accesses:
            with model.layer(index):
                pass
        return model.stats()


@pytest.mark.parametrize("budget", [6 * MIB, 64 * MIB])
@pytest.mark.parametrize("backend", ["mapped", "owned"])
def test_counts_match_the_rust_ones(fixture_dir, budget, backend):
    path = fixture_dir / "large.tmai"
    count = len(file_layers(path))
    accesses = list(range(count)) * 2 + [0, 3, 0, 3, count - 1, 1]
    arguments = dict(max_cache_size=budget, prefetch=False, prefetch_threads=0, backend=backend)
    ours = drive(path, accesses, **arguments)
    theirs = testing.rust_replay(path, accesses, **arguments)
    assert set(ours) == KEYS == set(theirs)
    for key in KEYS - TIMED:
        assert ours[key] == theirs[key], key
    assert ours["hits"] + ours["misses"] == len(accesses)


def test_counts_of_a_model_that_fits(fixture_dir):
    path = fixture_dir / "large.tmai"
    layers = file_layers(path)
    accesses = list(range(len(layers))) * 3
    stats = drive(path, accesses, max_cache_size=64 * MIB, prefetch=False, prefetch_threads=0)
    assert stats["misses"] == len(layers)
    assert stats["hits"] == 2 * len(layers)
    assert stats["evictions"] == 0
    assert stats["bytes_read"] == sum(length for _, length, _ in layers)
    assert stats["hit_ratio"] == pytest.approx(2 / 3)
    assert stats["load_time"] > 0
