"""Shared fixtures of the tinyai pytest suite.

Model files come from `tinyai._testing.write_fixture` (the deterministic
fixtures of `tinyai_format::fixtures`, the same ones the Rust tests use). The
oracle for their bytes is the file itself, read with plain Python I/O at the
offsets `tinyai.inspect` reports.
"""

import os
import shutil

import pytest

import tinyai
import tinyai._testing as testing

MIB = 1 << 20


def record_skip(name: str, reason: str) -> None:
    """Skips the calling test the project's way: `SKIP: <name>: <reason>` on
    stdout and in $TINYAI_SKIP_LOG (which `.ci/run` checks against
    `.ci/skip-allowlist`), then pytest's own skip."""
    line = f"SKIP: {name}: {reason}"
    print(line)
    log = os.environ.get("TINYAI_SKIP_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fixtures")
    testing.write_fixture("tiny", directory / "tiny.tmai")
    testing.write_fixture("multi_tensor", directory / "multi_tensor.tmai")
    # About 24 MiB in 8 layers of 4 KiB to 16 MiB (one of them not a multiple of 4 KiB).
    testing.write_fixture("large", directory / "large.tmai", 24 * MIB)
    testing.write_fixture("legacy_small", directory / "legacy_small.tmai")
    return directory


@pytest.fixture
def copy_of(fixture_dir, tmp_path):
    """copy_of(name) -> a private copy of a fixture (for tests that damage it)."""

    def make(name: str):
        target = tmp_path / name
        shutil.copyfile(fixture_dir / name, target)
        return target

    return make


def file_layers(path):
    """[(offset, length, bytes)] of every layer, read from the file."""
    info = tinyai.inspect(path)
    with open(path, "rb") as handle:
        data = handle.read()
    return [
        (layer["offset"], layer["length"], data[layer["offset"] : layer["offset"] + layer["length"]])
        for layer in info["layers"]
    ]
