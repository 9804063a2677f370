"""The TinyAI layer store from Python: stream model layers larger than memory,
with zero-copy NumPy views of layers and tensors.

    import tinyai
    with tinyai.open("model.tmai", max_cache_size=64 << 20) as model:
        for layer in model.forward_pass():          # prefetches ahead
            w = layer.tensor("attn.q.weight")        # read-only ndarray over the layer's bytes

A layer is pinned (kept in memory, its bytes valid) while its ``Layer`` object
or any array or memoryview taken from it lives; ``Model.close()`` with live
views is safe (they keep the file's mapping alive until they die).
"""

import os
from pathlib import Path
from types import TracebackType
from typing import Dict, Iterator, List, Literal, Optional, Sequence, Type, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, "os.PathLike[str]"]
_Backend = Literal["mapped", "owned", "owned_direct"]

class TinyAIError(Exception):
    """Base class of every error the store raises; str() is the store's message."""

class FormatError(TinyAIError):
    """The file is not a valid .tmai file (or not a convertible input)."""

class ChecksumError(FormatError):
    """A CRC-32C checksum (of a layer, the header or the tables) does not match the bytes."""

class FileChangedError(TinyAIError):
    """The file changed size or identity since it was opened, or a read came back short."""

class ConfigError(TinyAIError, ValueError):
    """An argument of open() is out of range or unknown, or a priority is not finite."""

class LayerIndexError(TinyAIError, IndexError):
    """A layer index is out of range."""

class TensorNotFoundError(TinyAIError, KeyError):
    """The layer has no tensor of that name."""

class ClosedError(TinyAIError, ValueError):
    """The model was closed, or the Layer released; views taken before stay valid."""

class StoreIOError(TinyAIError, OSError):
    """The OS refused an operation on the file; ``errno`` is set when the OS gave one."""

def open(
    path: _Path,
    *,
    max_cache_size: int = 256 << 20,
    prefetch: bool = True,
    prefetch_threads: int = 1,
    adaptive: bool = True,
    min_layer_cache_size: int = 4096,
    backend: _Backend = "mapped",
    verify_checksums: bool = False,
) -> Model:
    """Opens a model for layer-by-layer access under a memory budget: a .tmai
    file, a safetensors file, a sharded set's model.safetensors.index.json or a
    GGUF file (told apart by content; the last three carry no checksums).

    ``max_cache_size`` is a hard budget in bytes (layers held by live views may
    exceed it); ``prefetch`` turns automatic lookahead on; ``prefetch_threads``
    sizes the prefetch pool (0: none, at most 64); ``adaptive`` picks the
    adaptive policy (else TinyAI's classic score); ``min_layer_cache_size`` is
    the minimum charge per layer; ``backend`` is "mapped" (zero-copy from a
    private mapping), "owned" (read into private buffers; safe if another
    process truncates the file) or "owned_direct" (owned, with O_DIRECT);
    ``verify_checksums`` checks each layer's CRC-32C on first load.

    Raises StoreIOError (missing file …), FormatError, ConfigError.
    """

def inspect(path: _Path) -> dict:
    """Header, metadata, layers and tensors: the schema of ``tmai inspect --json``."""

def verify(path: _Path) -> str:
    """Checks structure and every layer checksum; returns the summary line,
    raises ChecksumError naming the corrupt layers."""

def convert(source: _Path, destination: _Path) -> Dict[str, Union[str, int]]:
    """Converts safetensors (file, directory or shard index), GGUF or legacy v1
    to .tmai, streamed and replaced atomically; returns format, layers, tensors, bytes."""

class LayerDescriptor:
    """What the store knows about one layer (TinyAI's TinyAILayerDescriptor)."""

    index: int
    offset: int
    size: int
    precision_bits: int
    dtype: str
    state: Literal["not_loaded", "loading", "cached", "transient"]
    priority: float
    last_accessed_ms: int
    access_count: int
    charge: int

class Layer:
    """One layer, pinned while this object or any array or memoryview of it lives.

    Supports the buffer protocol (``memoryview(layer)``: read-only bytes,
    zero-copy; CPython 3.11+). A context manager: the ``with`` block's end
    releases this object's pin; views taken inside keep their own.
    """

    @property
    def index(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def released(self) -> bool: ...
    @property
    def address(self) -> int:
        """Address of the layer's first byte (diagnostics, zero-copy checks)."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def array(self) -> npt.NDArray[np.uint8]:
        """The whole layer as a read-only 1-D uint8 array (zero-copy)."""
    def tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a read-only array over the layer's bytes, with its
        dtype and shape. bf16 comes back as uint16 bit patterns; f8, packed i4,
        GGML blocks and opaque tensors as 1-D uint8 bytes. Raises TensorNotFoundError."""
    def tensors(self) -> Dict[str, np.ndarray]:
        """Every tensor of the layer, by name, in table order."""
    def tensor_names(self) -> List[str]: ...
    def tensor_info(self, name: str) -> dict:
        """name, dtype (stored type name), shape, source_type, offset_in_layer, size."""
    def release(self) -> None:
        """Drops this object's pin; later calls on it raise ClosedError."""
    def __enter__(self) -> "Layer": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

class ForwardPass(Iterator[Layer]):
    """Layers in a declared order; the next ones load while you work on the current one."""

    def __iter__(self) -> "ForwardPass": ...
    def __next__(self) -> Layer: ...
    def __len__(self) -> int: ...

class Model:
    """An open model. Thread-safe; loads and prefetches release the GIL."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Layer: ...
    def __iter__(self) -> ForwardPass: ...
    def layer(self, index: int) -> Layer:
        """Layer ``index`` (negative counts from the end), loaded if needed.
        Raises LayerIndexError, ChecksumError (verify_checksums), FileChangedError."""
    def prefetch(self, index: int) -> bool:
        """Starts loading in the background; False if the cache declined."""
    def release(self, index: int) -> None:
        """Drops the layer from the cache (when its last pin goes, if pinned)."""
    def set_priority(self, index: int, priority: float) -> None: ...
    def reset_priorities(self) -> None: ...
    def descriptor(self, index: int) -> LayerDescriptor: ...
    def stats(self) -> Dict[str, Union[int, float]]:
        """hits, misses, bypasses, bytes_read, evictions, prefetch_issued,
        prefetch_used, prefetch_wasted, prefetch_cancelled, checksum_failures,
        checksums_verified,
        load_time (s), cached_bytes, transient_bytes, reclaim_pending_bytes,
        io_bandwidth (bytes/s), io_latency (s), io_depth, buffers_reused,
        buffers_allocated, pooled_bytes, layers_without_checksum, hit_ratio."""
    def read_tensor_bytes(self, index: int, name: str, start: int, length: int) -> bytes:
        """``length`` bytes of tensor ``name`` of layer ``index`` from ``start``,
        read from the file without loading or charging the layer (gathering
        rows of a table larger than the budget)."""
    def verify_layer_from_file(self, index: int) -> None:
        """Checks the layer's checksum against the file without loading it; raises ChecksumError."""
    @property
    def memory_usage(self) -> int:
        """Charged bytes: cached layers plus layers held outside the cache."""
    @property
    def metadata(self) -> Dict[str, str]: ...
    @property
    def backend(self) -> _Backend: ...
    @property
    def path(self) -> Path:
        """The path the model was opened from (a pathlib.Path)."""
    @property
    def closed(self) -> bool: ...
    def tensor_names(self, layer: Optional[int] = None) -> List[str]: ...
    def forward_pass(self, order: Optional[Sequence[int]] = None) -> ForwardPass:
        """Iterates layers in ``order`` (default all), prefetching ahead; the
        order is declared to the cache."""
    def close(self) -> None:
        """Stops prefetching, waits for loads in flight. Live views stay valid."""
    def __enter__(self) -> "Model": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...
