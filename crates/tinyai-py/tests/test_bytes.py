"""Bytes and tensors: every layer equals the file; every dtype comes back
with the right dtype, shape and values."""

import json
import struct

import numpy as np
import pytest

import tinyai
from conftest import MIB, file_layers

BACKENDS = ["mapped", "owned", "owned_direct"]
FIXTURES = ["tiny.tmai", "multi_tensor.tmai", "large.tmai", "legacy_small.tmai"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FIXTURES)
def test_every_layer_equals_the_file(fixture_dir, name, backend):
    path = fixture_dir / name
    expected = file_layers(path)
    # A budget below the largest layer for the large fixture: layers stream through.
    with tinyai.open(path, max_cache_size=8 * MIB, backend=backend) as model:
        assert len(model) == len(expected)
        for index, (_, length, data) in enumerate(expected):
            with model.layer(index) as layer:
                assert layer.index == index
                assert len(layer) == layer.nbytes == length
                view = memoryview(layer)
                assert view.readonly and view.format == "B" and view.nbytes == length
                assert view == data
                assert layer.array().tobytes() == data
                del view


def test_forward_pass_and_iteration_yield_every_layer_in_order(fixture_dir):
    path = fixture_dir / "large.tmai"
    expected = file_layers(path)
    with tinyai.open(path, max_cache_size=8 * MIB) as model:
        seen = [(layer.index, memoryview(layer) == data) for layer, (_, _, data) in zip(model.forward_pass(), expected)]
        assert seen == [(i, True) for i in range(len(expected))]
        order = [3, 1, 0, -1]
        pass_ = model.forward_pass(order)
        assert len(pass_) == 4
        assert [layer.index for layer in pass_] == [3, 1, 0, len(model) - 1]
        assert [layer.index for layer in model] == list(range(len(model)))


NUMPY_DTYPES = {
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "f64": np.dtype("<f8"),
    "i8": np.dtype("i1"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "u8": np.dtype("u1"),
    "u16": np.dtype("<u2"),
    "u32": np.dtype("<u4"),
    "u64": np.dtype("<u8"),
    "bool": np.dtype("?"),
    "bf16": np.dtype("<u2"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["tiny.tmai", "multi_tensor.tmai"])
def test_tensor_arrays_have_the_stored_dtype_shape_and_bytes(fixture_dir, name, backend):
    path = fixture_dir / name
    info = tinyai.inspect(path)
    data = path.read_bytes()
    seen_dtypes = set()
    with tinyai.open(path, backend=backend) as model:
        for layer_info in info["layers"]:
            with model.layer(layer_info["index"]) as layer:
                tensors = layer.tensors()
                assert list(tensors) == [t["name"] for t in layer_info["tensors"]]
                assert layer.tensor_names() == list(tensors)
                for tensor in layer_info["tensors"]:
                    array = layer.tensor(tensor["name"])
                    stored = data[tensor["offset"] : tensor["offset"] + tensor["size"]]
                    seen_dtypes.add(tensor["dtype"])
                    if tensor["dtype"] in NUMPY_DTYPES:
                        assert array.dtype == NUMPY_DTYPES[tensor["dtype"]], tensor
                        assert array.shape == tuple(tensor["shape"]), tensor
                        reference = np.frombuffer(stored, NUMPY_DTYPES[tensor["dtype"]]).reshape(tensor["shape"])
                        # Compare bit patterns: random fixture bytes hold NaNs.
                        assert array.tobytes() == reference.tobytes()
                        if array.dtype.kind in "iu":
                            assert np.array_equal(array, reference)
                    else:
                        # No NumPy type (GGML blocks, packed i4, opaque): raw bytes.
                        assert array.dtype == np.uint8 and array.shape == (tensor["size"],), tensor
                        assert array.tobytes() == stored
                    assert tensors[tensor["name"]].tobytes() == stored
                    described = layer.tensor_info(tensor["name"])
                    assert described["dtype"] == tensor["dtype"]
                    assert described["shape"] == tensor["shape"]
                    assert described["size"] == tensor["size"]
    if name == "multi_tensor.tmai":
        assert seen_dtypes == {"f32", "f16", "bf16", "ggml", "i8", "bool", "f64", "i4", "u16", "opaque"}


def write_safetensors(path, arrays, dtype_names):
    """A safetensors file by hand (header JSON + little-endian data)."""
    header, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype_names[name], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def test_known_values_of_every_numpy_dtype_through_convert(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {
        "layers.0.f32": rng.standard_normal((3, 5)).astype("<f4"),
        "layers.0.f16": rng.standard_normal((4, 2)).astype("<f2"),
        "layers.0.f64": rng.standard_normal((2, 3, 2)).astype("<f8"),
        "layers.0.i8": rng.integers(-128, 127, (7,)).astype("i1"),
        "layers.1.i16": rng.integers(-30000, 30000, (3, 3)).astype("<i2"),
        "layers.1.i32": rng.integers(-(2**31), 2**31 - 1, (5,)).astype("<i4"),
        "layers.1.i64": rng.integers(-(2**62), 2**62, (2, 2)).astype("<i8"),
        "layers.1.u8": rng.integers(0, 255, (9,)).astype("u1"),
        "layers.2.u16": rng.integers(0, 65535, (4,)).astype("<u2"),
        "layers.2.u32": rng.integers(0, 2**32 - 1, (4,)).astype("<u4"),
        "layers.2.u64": rng.integers(0, 2**63, (4,)).astype("<u8"),
        "layers.2.bool": rng.integers(0, 2, (6,)).astype("?"),
        "layers.2.bf16": (rng.standard_normal((2, 4)).astype("<f4").view("<u4") >> 16).astype("<u2"),
    }
    names = {
        "f32": "F32", "f16": "F16", "f64": "F64", "i8": "I8", "i16": "I16", "i32": "I32", "i64": "I64",
        "u8": "U8", "u16": "U16", "u32": "U32", "u64": "U64", "bool": "BOOL", "bf16": "BF16",
    }
    dtype_names = {name: names[name.rsplit(".", 1)[1]] for name in arrays}
    source, converted = tmp_path / "model.safetensors", tmp_path / "model.tmai"
    write_safetensors(source, arrays, dtype_names)
    summary = tinyai.convert(source, converted)
    assert summary["format"] == "safetensors" and summary["tensors"] == len(arrays) and summary["layers"] == 3
    assert "all checksums match" in tinyai.verify(converted)
    with tinyai.open(converted) as model:
        assert model.metadata["source.format"] == "safetensors"
        assert sorted(model.tensor_names()) == sorted(arrays)
        found = {}
        for layer in model.forward_pass():
            found.update(layer.tensors())
    for name, expected in arrays.items():
        array = found[name]
        assert array.dtype == expected.dtype, name
        assert array.shape == expected.shape, name
        assert np.array_equal(array, expected), name

    # The same file opened as it is (issue 15): the same arrays, no conversion,
    # and no checksums to verify.
    with tinyai.open(source, max_cache_size=1 << 20) as model:
        assert sorted(model.tensor_names()) == sorted(arrays)
        assert model.stats()["layers_without_checksum"] == 3
        direct = {}
        for layer in model.forward_pass():
            direct.update({name: array.copy() for name, array in layer.tensors().items()})
    for name, expected in arrays.items():
        array = direct[name]
        assert array.dtype == expected.dtype, name
        assert array.shape == expected.shape, name
        assert np.array_equal(array, expected), name


def test_metadata_descriptor_and_inspect(fixture_dir):
    path = fixture_dir / "multi_tensor.tmai"
    info = tinyai.inspect(path)
    assert info["format_version"] == "2.0" and info["legacy"] is False
    with tinyai.open(path) as model:
        assert model.metadata == info["metadata"]
        assert model.metadata["general.description"] == "ünïcødé ✓ 模型"
        assert model.backend == "mapped"
        assert model.tensor_names(1) == [t["name"] for t in info["layers"][1]["tensors"]]
        for layer in info["layers"]:
            descriptor = model.descriptor(layer["index"])
            assert (descriptor.index, descriptor.offset, descriptor.size) == (layer["index"], layer["offset"], layer["length"])
            assert descriptor.dtype == layer["dtype"]
            assert descriptor.state == "not_loaded" and descriptor.access_count == 0
        with model.layer(0):
            assert model.descriptor(0).state == "cached"
            assert model.descriptor(0).access_count == 1
        model.set_priority(0, 5.0)
        assert model.descriptor(0).priority == 5.0
        model.reset_priorities()
        assert model.descriptor(0).priority == 1.0
        assert model.memory_usage == model.descriptor(0).charge
        model.release(0)
        assert model.descriptor(0).state == "not_loaded"
        assert model.memory_usage == 0


def test_forward_pass_prefetches_ahead(fixture_dir):
    path = fixture_dir / "large.tmai"
    with tinyai.open(path, max_cache_size=64 * MIB, prefetch=False, prefetch_threads=1) as model:
        indices = [layer.index for layer in model.forward_pass()]
        stats = model.stats()
    assert indices == list(range(len(indices)))
    # prefetch=False turns off automatic lookahead only: what was prefetched came from the pass.
    assert stats["prefetch_issued"] >= len(indices) - 1
    assert stats["hits"] + stats["misses"] == len(indices)
