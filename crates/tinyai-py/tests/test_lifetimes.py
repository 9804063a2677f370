"""Lifetimes: an array or memoryview keeps its layer pinned; closing the
model with live views is safe; released objects raise, never dangle."""

import gc

import numpy as np
import pytest

import tinyai
from conftest import MIB, file_layers


def open_small(path, backend="owned"):
    # No prefetch and no background threads: the layer states below are deterministic.
    return tinyai.open(path, max_cache_size=20 * MIB, prefetch=False, prefetch_threads=0, backend=backend)


VIEWS = {
    "tensor": lambda layer: layer.tensor(layer.tensor_names()[0]),
    "array": lambda layer: layer.array(),
    "memoryview": memoryview,
    "tensors-dict-entry": lambda layer: next(iter(layer.tensors().values())),
}


@pytest.mark.parametrize("view_kind", list(VIEWS))
@pytest.mark.parametrize("backend", ["mapped", "owned"])
def test_a_view_keeps_its_layer_pinned_after_del_layer(fixture_dir, backend, view_kind):
    path = fixture_dir / "large.tmai"
    expected = file_layers(path)
    big = max(range(len(expected)), key=lambda i: expected[i][1])
    with open_small(path, backend) as model:
        layer = model.layer(big)
        view = VIEWS[view_kind](layer)
        del layer
        gc.collect()
        model.release(big)  # pinned: leaves the cache, memory kept until the last pin goes
        assert model.descriptor(big).state == "transient"
        for _ in range(2):  # pressure: stream every other layer through the budget
            for index in range(len(model)):
                if index != big:
                    with model.layer(index):
                        pass
        assert model.descriptor(big).state == "transient"
        assert bytes(view) == expected[big][2]
        if isinstance(view, memoryview):
            view.release()
        del view
        gc.collect()
        assert model.descriptor(big).state == "not_loaded"


def test_with_block_releases_the_layer_object_but_not_its_views(fixture_dir):
    path = fixture_dir / "tiny.tmai"
    expected = file_layers(path)
    with open_small(path) as model:
        with model.layer(0) as layer:
            array = layer.tensor("weight")
            view = memoryview(layer)
        assert layer.released
        for call in (lambda: layer.tensor("weight"), layer.array, lambda: memoryview(layer), lambda: layer.address):
            with pytest.raises(tinyai.ClosedError):
                call()
        model.release(0)
        assert model.descriptor(0).state == "transient"
        assert array.tobytes() == expected[0][2]
        del array
        gc.collect()
        assert model.descriptor(0).state == "transient"  # the memoryview still pins it
        assert view == expected[0][2]
        view.release()
        gc.collect()
        assert model.descriptor(0).state == "not_loaded"
        layer.release()  # twice: nothing


@pytest.mark.parametrize("backend", ["mapped", "owned"])
def test_close_with_live_views_is_safe(fixture_dir, backend):
    path = fixture_dir / "large.tmai"
    expected = file_layers(path)
    model = tinyai.open(path, max_cache_size=20 * MIB, backend=backend)
    layer = model.layer(1)
    array = layer.array()
    view = memoryview(model.layer(2))
    tensor = model.layer(3).tensor("t0")
    model.close()
    assert model.closed
    # Every view still shows the file's bytes: the store's memory lives until they go.
    assert array.tobytes() == expected[1][2]
    assert view == expected[2][2]
    assert tensor.tobytes() == expected[3][2]
    assert bytes(memoryview(layer)) == expected[1][2]
    for call in (lambda: model.layer(0), lambda: len(model), model.stats, lambda: model.memory_usage, lambda: model.prefetch(0)):
        with pytest.raises(tinyai.ClosedError):
            call()
    model.close()  # twice: nothing
    del layer, array, view
    gc.collect()
    assert int(tensor.astype(np.uint64).sum()) == sum(expected[3][2])
    del tensor
    gc.collect()


def test_forward_pass_after_close_raises(fixture_dir):
    model = tinyai.open(fixture_dir / "tiny.tmai")
    passing = model.forward_pass()
    first = next(passing)
    model.close()
    with pytest.raises(tinyai.ClosedError):
        next(passing)
    assert first.array().nbytes == first.nbytes
