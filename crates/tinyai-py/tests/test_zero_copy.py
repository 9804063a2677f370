"""Zero-copy: arrays and memoryviews are the layer's own bytes, never a copy."""

import tracemalloc

import numpy as np
import pytest

import tinyai
from conftest import MIB


def biggest_layer(path):
    info = tinyai.inspect(path)
    layer = max(info["layers"], key=lambda layer: layer["length"])
    return layer["index"], layer


@pytest.mark.parametrize("backend", ["mapped", "owned"])
def test_arrays_and_memoryviews_point_into_the_layer(fixture_dir, backend):
    path = fixture_dir / "multi_tensor.tmai"
    info = tinyai.inspect(path)
    with tinyai.open(path, backend=backend) as model, model.layer(1) as layer:
        whole = np.frombuffer(memoryview(layer), dtype=np.uint8)
        assert whole.__array_interface__["data"][0] == layer.address
        assert layer.array().__array_interface__["data"][0] == layer.address
        for tensor in info["layers"][1]["tensors"]:
            array = layer.tensor(tensor["name"])
            assert array.__array_interface__["data"][0] == layer.address + tensor["offset_in_layer"]
            assert np.shares_memory(array, whole)
            assert np.shares_memory(array, layer.tensor(tensor["name"]))
            assert not array.flags.owndata
            assert isinstance(array.base, type(memoryview(layer).obj))


def test_views_are_read_only(fixture_dir):
    with tinyai.open(fixture_dir / "tiny.tmai") as model, model.layer(0) as layer:
        array = layer.tensor("weight")
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0, 0] = 1.0
        with pytest.raises(ValueError):
            array.setflags(write=True)
        view = memoryview(layer)
        assert view.readonly
        with pytest.raises(TypeError):
            view[0] = 1
        with pytest.raises(BufferError):
            _writable_buffer(layer)


def _writable_buffer(layer):
    # A writable buffer request (what ctypes' from_buffer makes) must be refused.
    import ctypes

    try:
        ctypes.c_char.from_buffer(layer)
    except TypeError as error:  # ctypes reports the refused writable request as TypeError
        raise BufferError(str(error)) from error


def test_no_allocation_of_the_layer_size(fixture_dir):
    path = fixture_dir / "large.tmai"
    index, info = biggest_layer(path)
    assert info["length"] >= 8 * MIB
    with tinyai.open(path, max_cache_size=64 * MIB) as model:
        tracemalloc.start()
        try:
            layer = model.layer(index)
            array = layer.tensor(info["tensors"][0]["name"])
            whole = layer.array()
            view = memoryview(layer)
            checksum = int(array[:: 4096].astype(np.uint64).sum()) + whole.nbytes + view.nbytes
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert checksum > 0
        assert array.nbytes == info["length"]
        # Python-side allocations (NumPy registers its data buffers with
        # tracemalloc) stay far below one layer: nothing was copied.
        assert peak < MIB, f"peak traced allocation {peak} bytes for a {info['length']}-byte layer"
        del layer, array, whole, view
