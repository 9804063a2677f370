"""Four Python threads streaming one model concurrently get the right bytes."""

import hashlib
import threading

import pytest

import tinyai
from conftest import MIB, file_layers


@pytest.mark.parametrize("backend", ["mapped", "owned"])
def test_four_threads_stream_concurrently(fixture_dir, backend):
    path = fixture_dir / "large.tmai"
    expected = [hashlib.sha256(data).hexdigest() for _, _, data in file_layers(path)]
    errors, checked = [], [0] * 4
    with tinyai.open(path, max_cache_size=12 * MIB, prefetch_threads=2, backend=backend) as model:
        start = threading.Barrier(4)

        def stream(worker):
            try:
                start.wait()
                for round_ in range(3):
                    order = list(range(len(model)))
                    if (worker + round_) % 2:
                        order.reverse()
                    for index in order:
                        with model.layer(index) as layer:
                            digest = hashlib.sha256(memoryview(layer)).hexdigest()
                            if digest != expected[index]:
                                errors.append(f"thread {worker}: layer {index} differs")
                            checked[worker] += 1
                    for layer in model.forward_pass():
                        if hashlib.sha256(layer.array()).hexdigest() != expected[layer.index]:
                            errors.append(f"thread {worker}: layer {layer.index} differs in a forward pass")
                        checked[worker] += 1
                        layer.release()
            except Exception as error:  # reported below, with the thread
                errors.append(f"thread {worker}: {error!r}")

        threads = [threading.Thread(target=stream, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = model.stats()
    assert errors == []
    assert checked == [6 * len(expected)] * 4
    assert stats["hits"] + stats["misses"] == 4 * 6 * len(expected)
