"""Bad input raises the documented exception with the store's message; nothing crashes."""

import errno
import os

import pytest

import tinyai
from conftest import MIB


def test_exception_hierarchy():
    assert issubclass(tinyai.FormatError, tinyai.TinyAIError)
    assert issubclass(tinyai.ChecksumError, tinyai.FormatError)
    assert issubclass(tinyai.FileChangedError, tinyai.TinyAIError)
    assert issubclass(tinyai.ConfigError, ValueError) and issubclass(tinyai.ConfigError, tinyai.TinyAIError)
    assert issubclass(tinyai.LayerIndexError, IndexError)
    assert issubclass(tinyai.TensorNotFoundError, KeyError)
    assert issubclass(tinyai.ClosedError, ValueError)
    assert issubclass(tinyai.StoreIOError, OSError)
    assert tinyai.TinyAIError.__module__ == "tinyai"


def test_missing_file(tmp_path):
    missing = tmp_path / "missing.tmai"
    with pytest.raises(tinyai.StoreIOError) as caught:
        tinyai.open(missing)
    assert caught.value.errno == errno.ENOENT
    assert str(missing) in str(caught.value)
    with pytest.raises(tinyai.StoreIOError):
        tinyai.inspect(missing)
    with pytest.raises(tinyai.StoreIOError):
        tinyai.verify(missing)


def test_a_directory(tmp_path):
    with pytest.raises(tinyai.StoreIOError, match="not a regular file"):
        tinyai.open(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 100, os.urandom(4096), b"TMAI" + bytes(200)],
    ids=["empty", "text", "random", "magic-then-zeros"],
)
def test_garbage_is_a_format_error(tmp_path, content):
    path = tmp_path / "garbage.tmai"
    path.write_bytes(content)
    with pytest.raises(tinyai.FormatError):
        tinyai.open(path)
    with pytest.raises(tinyai.FormatError):
        tinyai.inspect(path)
    with pytest.raises(tinyai.FormatError):
        tinyai.convert(path, tmp_path / "out.tmai")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_file_is_a_format_error(fixture_dir, tmp_path, keep):
    data = (fixture_dir / "multi_tensor.tmai").read_bytes()
    path = tmp_path / "truncated.tmai"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(tinyai.FormatError) as caught:
        tinyai.open(path)
    assert str(path) in str(caught.value)


def test_file_truncated_after_open_is_file_changed(copy_of):
    path = copy_of("large.tmai")
    with tinyai.open(path, backend="owned", prefetch=False, prefetch_threads=0) as model:
        with model.layer(0):
            pass
        os.truncate(path, os.path.getsize(path) // 2)
        with pytest.raises(tinyai.FileChangedError, match="changed since it was opened"):
            model.layer(len(model) - 1)


def test_out_of_range_index(fixture_dir):
    with tinyai.open(fixture_dir / "tiny.tmai") as model:
        count = len(model)
        for call in (
            lambda: model.layer(count),
            lambda: model[count],
            lambda: model[-count - 1],
            lambda: model.prefetch(count),
            lambda: model.release(1 << 40),
            lambda: model.descriptor(count),
            lambda: model.set_priority(count, 1.0),
            lambda: model.forward_pass([0, count]),
            lambda: model.tensor_names(count),
        ):
            with pytest.raises(tinyai.LayerIndexError, match="out of range"):
                call()
        with pytest.raises(IndexError):
            model[count]
        assert model[-1].index == count - 1


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_cache_size": 0},
        {"max_cache_size": -1},
        {"prefetch_threads": 65},
        {"prefetch_threads": -1},
        {"min_layer_cache_size": -5},
        {"min_layer_cache_size": 1 << 50},
        {"backend": "bogus"},
    ],
    ids=lambda arguments: "-".join(f"{k}={v}" for k, v in arguments.items()),
)
def test_bad_config(fixture_dir, arguments):
    with pytest.raises(tinyai.ConfigError, match="invalid configuration"):
        tinyai.open(fixture_dir / "tiny.tmai", **arguments)


def test_bad_priority_and_unknown_tensor(fixture_dir):
    with tinyai.open(fixture_dir / "tiny.tmai") as model:
        with pytest.raises(tinyai.ConfigError, match="not a finite number"):
            model.set_priority(0, float("nan"))
        with model.layer(0) as layer:
            with pytest.raises(tinyai.TensorNotFoundError, match="no tensor named"):
                layer.tensor("nope")
            with pytest.raises(KeyError):
                layer.tensor_info("nope")


def test_checksum_mismatch(copy_of):
    path = copy_of("multi_tensor.tmai")
    layer = tinyai.inspect(path)["layers"][0]
    with open(path, "r+b") as handle:
        handle.seek(layer["offset"] + 3)
        byte = handle.read(1)
        handle.seek(layer["offset"] + 3)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(tinyai.ChecksumError, match="layer 0"):
        tinyai.verify(path)
    with tinyai.open(path, verify_checksums=True) as model:
        with pytest.raises(tinyai.ChecksumError):
            model.layer(0)
        with pytest.raises(tinyai.ChecksumError):
            model.verify_layer_from_file(0)
        assert model.stats()["checksum_failures"] >= 1
        with model.layer(1) as good:  # the other layers are fine
            assert good.nbytes > 0
    with tinyai.open(path) as model:  # not verified: served as stored
        with model.layer(0):
            pass
