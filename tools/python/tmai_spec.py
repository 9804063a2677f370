#!/usr/bin/env python3
"""Independent reader/writer for the `.tmai` model format (v2.0, plus legacy v1).

Written strictly from ``docs/format.md`` (no reference to the Rust sources), to
check that the specification alone is enough to implement the format.
Standard library only.

Usage::

    python3 tmai_spec.py read FILE          # print a JSON summary, exit 1 on an invalid file
    python3 tmai_spec.py verify FILE        # check every layer checksum, exit 0/1
    python3 tmai_spec.py write-sample OUT   # write a sample v2 file exercising the format

Library::

    read(path) -> dict
    verify(path) -> dict          # raises TmaiError on the first bad checksum
    write(path, layers=[...], metadata={...}, alignment=4096)
"""

import json
import os
import struct
import sys
import tempfile

__all__ = ["TmaiError", "crc32c", "read", "parse", "verify", "write", "write_sample"]

# --------------------------------------------------------------------------
# Constants (docs/format.md)
# --------------------------------------------------------------------------

MAGIC = b"TMAI\r\n\x1a\n"
LEGACY_MAGIC = b"\x49\x41\x4d\x54"  # the u32 0x544D4149, little-endian
SUPPORTED_MAJOR = 2
KNOWN_MINOR = 0
HEADER_SIZE = 128
MIN_HEADER_SIZE = 128
MAX_HEADER_SIZE = 4096
MIN_ALIGNMENT = 64
MAX_ALIGNMENT = 1 << 30
DEFAULT_ALIGNMENT = 4096
TENSOR_ALIGN_IN_LAYER = 64

LAYER_ENTRY = 64
TENSOR_ENTRY = 104
META_ENTRY = 24

MAX_NAME = 65535
MAX_KEY = 65535
MAX_VALUE = 16 * 1024 * 1024
MAX_RANK = 8
U64_LIMIT = 1 << 64
U128_LIMIT = 1 << 128

FLAG_CHECKSUM = 1

DTYPE_OPAQUE = 0
DTYPE_GGML = 17
DTYPE_MIXED = 0xFFFF

# code -> (name, bits per element or None)
DTYPES = {
    0: ("opaque", None),
    1: ("f32", 32),
    2: ("f16", 16),
    3: ("bf16", 16),
    4: ("f64", 64),
    5: ("i8", 8),
    6: ("i16", 16),
    7: ("i32", 32),
    8: ("i64", 64),
    9: ("u8", 8),
    10: ("u16", 16),
    11: ("u32", 32),
    12: ("u64", 64),
    13: ("bool", 8),
    14: ("f8_e4m3", 8),
    15: ("f8_e5m2", 8),
    16: ("i4", 4),
    17: ("ggml", None),
}
DTYPE_BY_NAME = {name: code for code, (name, _) in DTYPES.items()}
DTYPE_BY_NAME["mixed"] = DTYPE_MIXED

# GGML type id -> (name, elements per block E, bytes per block B)
GGML_BLOCKS = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    31: ("Q4_0_4_4", 32, 18),
    32: ("Q4_0_4_8", 32, 18),
    33: ("Q4_0_8_8", 32, 18),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

LEGACY_HEADER = 256
LEGACY_ENTRY = 32


class TmaiError(Exception):
    """A file (or a write request) breaks a rule of docs/format.md.

    ``rule`` names the rule (the Validation step number for v2 files, e.g.
    "6", or a short tag), ``where`` says which structure failed.
    """

    def __init__(self, rule, where, message):
        self.rule = rule
        self.where = where
        self.message = message
        super().__init__("rule %s: %s: %s" % (rule, where, message))


# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected, poly 0x82F63B78, init/xorout 0xFFFFFFFF
# --------------------------------------------------------------------------


def _make_crc_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x82F63B78
            else:
                crc >>= 1
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()


class Crc32c:
    """Incremental CRC-32C (table-driven version of the doc's bitwise loop)."""

    def __init__(self):
        self._crc = 0xFFFFFFFF

    def update(self, data):
        crc = self._crc
        table = _CRC_TABLE
        for b in bytes(data):
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        self._crc = crc
        return self

    def value(self):
        return self._crc ^ 0xFFFFFFFF


def crc32c(data):
    return Crc32c().update(data).value()


assert crc32c(b"123456789") == 0xE3069283
assert crc32c(b"") == 0


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _u16(buf, off):
    return struct.unpack_from("<H", buf, off)[0]


def _u32(buf, off):
    return struct.unpack_from("<I", buf, off)[0]


def _u64(buf, off):
    return struct.unpack_from("<Q", buf, off)[0]


def _is_pow2(x):
    return x > 0 and (x & (x - 1)) == 0


def _dtype_name(code):
    if code == DTYPE_MIXED:
        return "mixed"
    if code in DTYPES:
        return DTYPES[code][0]
    return "unknown(%d)" % code


def _element_count(shape):
    """Product of the dimensions, checked against 128 bits (None on overflow)."""
    n = 1
    for d in shape:
        n *= d
        if n >= U128_LIMIT:
            return None
    return n


def expected_length(dtype, source_type, shape):
    """Byte length the size rule demands, or None when unconstrained.

    Raises ValueError with a reason when the rule cannot be satisfied
    (overflow, n not a multiple of the GGML block size).
    """
    n = _element_count(shape)
    if n is None:
        raise ValueError("element count overflows 128 bits")
    if dtype == DTYPE_GGML:
        block = GGML_BLOCKS.get(source_type)
        if block is None:
            return None
        _, e, b = block
        if n % e != 0:
            raise ValueError(
                "element count %d is not a multiple of the GGML block size %d" % (n, e)
            )
        total = n // e * b
        if total >= U128_LIMIT:
            raise ValueError("byte count overflows 128 bits")
        return total
    bits = DTYPES.get(dtype, (None, None))[1]
    if bits is None:
        return None
    nbits = n * bits
    if nbits >= U128_LIMIT:
        raise ValueError("bit count overflows 128 bits")
    return (nbits + 7) // 8


def _precision_of(dtype, source_type):
    """Bits per weight of a (dtype, source_type) as the reference writer sets it."""
    if dtype == DTYPE_GGML:
        block = GGML_BLOCKS.get(source_type)
        if block is None:
            # The doc gives no rule for a GGML type outside the table; guess 8.
            return 8
        _, e, b = block
        return -(-(b * 8) // e)
    bits = DTYPES.get(dtype, (None, None))[1]
    return 8 if bits is None else bits


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------


def _get_string(data, st_off, st_len, off, length, limit, rule, where, what):
    # Step 8: length limit, then bounds, then UTF-8.
    if length > limit:
        raise TmaiError(rule, where, "%s is %d bytes, limit is %d" % (what, length, limit))
    if off + length > st_len:
        raise TmaiError(
            rule,
            where,
            "%s (offset %d, length %d) lies outside the string table (length %d)"
            % (what, off, length, st_len),
        )
    raw = bytes(data[st_off + off : st_off + off + length])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TmaiError(rule, where, "%s is not valid UTF-8 (%s)" % (what, e)) from None


def _intersects(off, length, start, end):
    """Whether the layer off..off+length intersects the region start..end."""
    if start >= end:
        return False
    if length == 0:
        return start < off < end
    return off < end and start < off + length


def parse(data):
    """Validate and decode a whole file held in ``data`` (bytes-like)."""
    data = memoryview(data)
    size = len(data)
    # ---- 1. magic
    if size == 0:
        raise TmaiError("1", "header", "the file is empty (truncated)")
    if size >= 4 and bytes(data[:4]) == LEGACY_MAGIC:
        return _parse_legacy(data)
    if size < 8 and MAGIC.startswith(bytes(data)):
        raise TmaiError("1", "header", "truncated v2 header: %d bytes, a prefix of the magic" % size)
    if bytes(data[:8]) != MAGIC:
        raise TmaiError("1", "header", "not a .tmai file (bad magic; not legacy v1 either)")
    # ---- 2. header size / version
    if size < MIN_HEADER_SIZE:
        raise TmaiError("2", "header", "file is %d bytes, shorter than the 128-byte header" % size)
    major = _u16(data, 8)
    minor = _u16(data, 10)
    if major != SUPPORTED_MAJOR:
        raise TmaiError("2", "header", "unsupported version %d.%d (this reader knows 2.x)" % (major, minor))
    header_size = _u32(data, 12)
    if not (MIN_HEADER_SIZE <= header_size <= MAX_HEADER_SIZE) or header_size % 8:
        raise TmaiError(
            "2", "header.header_size", "header_size %d not in 128..=4096 or not a multiple of 8" % header_size
        )
    if size < header_size:
        raise TmaiError("2", "header", "file is %d bytes, shorter than header_size %d" % (size, header_size))
    # ---- 3. header crc
    stored_hcrc = _u32(data, 124)
    hcrc = Crc32c().update(data[0:124]).update(data[128:header_size]).value()
    if hcrc != stored_hcrc:
        raise TmaiError(
            "3", "header.header_crc32c", "header checksum mismatch: stored %08x, computed %08x" % (stored_hcrc, hcrc)
        )
    # ---- 4. file length
    file_length = _u64(data, 16)
    if file_length != size:
        raise TmaiError(
            "4", "header.file_length", "file_length %d but the file has %d bytes (truncated or appended data)" % (file_length, size)
        )
    # ---- 5. alignment
    alignment = _u64(data, 24)
    if not _is_pow2(alignment) or not (MIN_ALIGNMENT <= alignment <= MAX_ALIGNMENT):
        raise TmaiError("5", "header.alignment", "alignment %d is not a power of two in 64..=2^30" % alignment)
    # ---- 6. tables
    layer_count = _u64(data, 32)
    layer_table_offset = _u64(data, 40)
    tensor_count = _u64(data, 48)
    tensor_table_offset = _u64(data, 56)
    metadata_count = _u64(data, 64)
    metadata_table_offset = _u64(data, 72)
    string_table_offset = _u64(data, 80)
    string_table_length = _u64(data, 88)
    tables = [
        ("layer table", layer_count, LAYER_ENTRY, layer_table_offset),
        ("tensor table", tensor_count, TENSOR_ENTRY, tensor_table_offset),
        ("metadata table", metadata_count, META_ENTRY, metadata_table_offset),
        ("string table", string_table_length, 1, string_table_offset),
    ]
    prev_end = header_size
    for name, count, entry, off in tables:
        nbytes = count * entry
        if nbytes >= U64_LIMIT or nbytes > file_length:
            raise TmaiError(
                "6", name, "absurd count %d (%d bytes > file_length %d)" % (count, nbytes, file_length)
            )
        if off % 8:
            raise TmaiError("6", name, "offset %d is not a multiple of 8" % off)
        if off < header_size:
            raise TmaiError("6", name, "offset %d lies inside the header (header_size %d)" % (off, header_size))
        end = off + nbytes
        if end >= U64_LIMIT or end > file_length:
            raise TmaiError("6", name, "range %d..%d extends past file_length %d" % (off, end, file_length))
        if off < prev_end:
            raise TmaiError(
                "6", name, "starts at %d, before the end of the previous table/header (%d)" % (off, prev_end)
            )
        prev_end = end
    region_start = layer_table_offset
    region_end = string_table_offset + string_table_length
    # ---- 7. tables crc
    stored_tcrc = _u32(data, 120)
    tcrc = crc32c(data[region_start:region_end])
    if tcrc != stored_tcrc:
        raise TmaiError(
            "7", "header.tables_crc32c", "table checksum mismatch: stored %08x, computed %08x" % (stored_tcrc, tcrc)
        )
    st_off, st_len = string_table_offset, string_table_length
    # ---- 8. metadata
    metadata = {}
    for k in range(metadata_count):
        e = metadata_table_offset + META_ENTRY * k
        key_off, val_off = _u64(data, e), _u64(data, e + 8)
        key_len, val_len = _u32(data, e + 16), _u32(data, e + 20)
        where = "metadata[%d]" % k
        key = _get_string(data, st_off, st_len, key_off, key_len, MAX_KEY, "8", where, "key")
        value = _get_string(data, st_off, st_len, val_off, val_len, MAX_VALUE, "8", where + " (key %r)" % key, "value")
        if key in metadata:
            raise TmaiError("8", where, "duplicate metadata key %r" % key)
        metadata[key] = value
    newer_minor = minor > KNOWN_MINOR
    # ---- 10. tensors of one layer (called right after the layer's step 9 checks)
    def check_tensors(layer):
        tnames = set()
        for j in range(layer["first_tensor"], layer["first_tensor"] + layer["tensor_count"]):
            e = tensor_table_offset + TENSOR_ENTRY * j
            name_off, name_len = _u64(data, e), _u32(data, e + 8)
            dtype, rank = _u16(data, e + 12), _u16(data, e + 14)
            off, length = _u64(data, e + 16), _u64(data, e + 24)
            dims = list(struct.unpack_from("<8Q", data, e + 32))
            source_type = _u32(data, e + 96)
            where = "layer[%d] %r tensor[%d]" % (layer["index"], layer["name"], j)
            name = _get_string(data, st_off, st_len, name_off, name_len, MAX_NAME, "10", where, "name")
            where = "%s %r" % (where, name)
            if off + length > layer["length"]:
                raise TmaiError(
                    "10", where, "range %d..%d (relative) exceeds the layer length %d" % (off, off + length, layer["length"])
                )
            if rank > MAX_RANK:
                raise TmaiError("10", where, "rank %d > 8" % rank)
            if any(dims[rank:]):
                raise TmaiError("10", where, "non-zero shape entries past rank %d: %r" % (rank, dims))
            if dtype == DTYPE_MIXED:
                raise TmaiError("10", where, "dtype 'mixed' (0xFFFF) is not allowed for a tensor")
            unknown = dtype not in DTYPES
            if unknown and not newer_minor:
                raise TmaiError("10", where, "unknown dtype code %d" % dtype)
            shape = dims[:rank]
            # An unknown code (newer minor) is handled as opaque: only the
            # 128-bit element-count overflow check applies.
            try:
                want = expected_length(dtype, source_type, shape)
            except ValueError as err:
                raise TmaiError("10", where, "size rule: %s" % err) from None
            if want is not None and want != length:
                raise TmaiError(
                    "10",
                    where,
                    "size rule: length %d but %s of shape %r needs %d bytes" % (length, _dtype_name(dtype), shape, want),
                )
            # Names compare byte-wise (str equality of decoded UTF-8); checked after the size rule.
            if name in tnames:
                raise TmaiError("10", where, "duplicate tensor name %r within the layer" % name)
            tnames.add(name)
            t = {
                "name": name,
                "dtype": dtype,
                "dtype_name": _dtype_name(dtype),
                "shape": shape,
                "offset": off,
                "length": length,
                "source_type": source_type,
            }
            if dtype == DTYPE_GGML and source_type in GGML_BLOCKS:
                t["ggml_type"] = GGML_BLOCKS[source_type][0]
            layer["tensors"].append(t)

    # ---- 9. layers
    layers = []
    seen_names = set()
    prev_layer_end = 0
    expect_first = 0
    for i in range(layer_count):
        e = layer_table_offset + LAYER_ENTRY * i
        off, length = _u64(data, e), _u64(data, e + 8)
        name_off, name_len = _u64(data, e + 16), _u32(data, e + 24)
        checksum = _u32(data, e + 28)
        first_tensor, tcount = _u64(data, e + 32), _u64(data, e + 40)
        dtype, precision = _u16(data, e + 48), _u16(data, e + 50)
        flags = _u32(data, e + 52)
        where = "layer[%d]" % i
        end = off + length
        if end >= U64_LIMIT:
            raise TmaiError("9", where, "offset %d + length %d overflows" % (off, length))
        if end > file_length:
            raise TmaiError("9", where, "range %d..%d extends past file_length %d" % (off, end, file_length))
        if off % alignment:
            raise TmaiError("9", where, "offset %d is not a multiple of alignment %d" % (off, alignment))
        if _intersects(off, length, 0, header_size):
            raise TmaiError("9", where, "range %d..%d intersects the header 0..%d" % (off, end, header_size))
        if _intersects(off, length, region_start, region_end):
            raise TmaiError(
                "9", where, "range %d..%d intersects the table region %d..%d" % (off, end, region_start, region_end)
            )
        if off < prev_layer_end:
            raise TmaiError(
                "9", where, "offset %d is before the end of the previous layer (%d): out of order or overlapping" % (off, prev_layer_end)
            )
        if not (1 <= precision <= 64):
            raise TmaiError("9", where, "precision_bits %d not in 1..=64" % precision)
        if dtype not in DTYPES and dtype != DTYPE_MIXED and not newer_minor:
            raise TmaiError("9", where, "unknown dtype code %d" % dtype)
        name = _get_string(data, st_off, st_len, name_off, name_len, MAX_NAME, "9", where, "name")
        if name in seen_names:
            raise TmaiError("9", where, "duplicate layer name %r" % name)
        seen_names.add(name)
        where = "layer[%d] %r" % (i, name)
        if first_tensor != expect_first:
            raise TmaiError(
                "9", where, "first_tensor %d, expected %d (tensor ranges must be consecutive from 0)" % (first_tensor, expect_first)
            )
        if first_tensor + tcount > tensor_count:
            raise TmaiError(
                "9", where, "tensor range %d..%d exceeds the tensor table (%d entries)" % (first_tensor, first_tensor + tcount, tensor_count)
            )
        expect_first = first_tensor + tcount
        prev_layer_end = end
        layers.append(
            {
                "index": i,
                "name": name,
                "offset": off,
                "length": length,
                "dtype": dtype,
                "dtype_name": _dtype_name(dtype),
                "precision": precision,
                "checksum": checksum,
                "has_checksum": bool(flags & FLAG_CHECKSUM),
                "flags": flags,
                "first_tensor": first_tensor,
                "tensor_count": tcount,
                "tensors": [],
            }
        )
        check_tensors(layers[-1])
    # ---- 11. every tensor belongs to a layer
    if expect_first != tensor_count:
        raise TmaiError(
            "11", "layer table", "layers' tensor counts sum to %d but the header says tensor_count %d" % (expect_first, tensor_count)
        )
    return {
        "format": "tmai",
        "version": "%d.%d" % (major, minor),
        "major": major,
        "minor": minor,
        "header_size": header_size,
        "file_length": file_length,
        "alignment": alignment,
        "layer_count": layer_count,
        "layer_table_offset": layer_table_offset,
        "tensor_count": tensor_count,
        "tensor_table_offset": tensor_table_offset,
        "metadata_count": metadata_count,
        "metadata_table_offset": metadata_table_offset,
        "string_table_offset": string_table_offset,
        "string_table_length": string_table_length,
        "tables_crc32c": stored_tcrc,
        "header_crc32c": stored_hcrc,
        "layers": layers,
        "metadata": metadata,
    }


def _parse_legacy(data):
    size = len(data)
    if size < LEGACY_HEADER:
        raise TmaiError("v1", "header", "legacy v1 file is %d bytes, shorter than its 256-byte header" % size)
    version = _u32(data, 4)
    if version != 1:
        raise TmaiError("v1", "header", "legacy magic but version %d (must be 1)" % version)
    n = _u32(data, 8)
    table_end = LEGACY_HEADER + LEGACY_ENTRY * n
    if LEGACY_ENTRY * n > size:
        raise TmaiError(
            "v1", "header", "absurd layer count %d: its table (%d bytes) cannot fit in the %d-byte file" % (n, LEGACY_ENTRY * n, size)
        )
    if table_end > size:
        raise TmaiError(
            "v1", "header", "truncated: header and layer table need %d bytes, the file has %d" % (table_end, size)
        )
    raw_name = bytes(data[16:80])
    nul = raw_name.find(b"\0")
    if nul >= 0:
        raw_name = raw_name[:nul]
    try:
        model_name = raw_name.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TmaiError("v1", "header.name", "model name is not valid UTF-8 (%s)" % e) from None
    layers = []
    for i in range(n):
        e = LEGACY_HEADER + LEGACY_ENTRY * i
        off, length, precision = _u32(data, e), _u32(data, e + 4), _u32(data, e + 8)
        where = "layer[%d]" % i
        end = off + length
        if end >= 1 << 32:
            raise TmaiError("v1", where, "offset + size %d does not fit in 32 bits" % end)
        if end > size:
            raise TmaiError("v1", where, "range %d..%d extends past the file (%d bytes)" % (off, end, size))
        if _intersects(off, length, 0, table_end):
            raise TmaiError("v1", where, "range %d..%d intersects the header and table 0..%d" % (off, end, table_end))
        if not (1 <= precision <= 64):
            raise TmaiError("v1", where, "precision %d not in 1..=64" % precision)
        layers.append(
            {
                "index": i,
                "name": None,
                "offset": off,
                "length": length,
                "dtype": DTYPE_OPAQUE,
                "dtype_name": "opaque",
                "precision": precision,
                "checksum": None,
                "has_checksum": False,
                "flags": 0,
                "first_tensor": 0,
                "tensor_count": 0,
                "tensors": [],
            }
        )
    # no two layers overlap (any order): sort by (offset, end, index), compare neighbours;
    # a zero-length layer strictly inside another's bytes overlaps it
    spans = sorted((l["offset"], l["offset"] + l["length"], l["index"]) for l in layers)
    for (a0, a1, ai), (b0, b1, bi) in zip(spans, spans[1:]):
        if b0 < a1:
            raise TmaiError("v1", "layer[%d]" % bi, "overlaps layer[%d] (%d..%d vs %d..%d)" % (ai, a0, a1, b0, b1))
    return {
        "format": "tmai",
        "version": "1",
        "major": 1,
        "minor": 0,
        "header_size": LEGACY_HEADER,
        "file_length": size,
        "alignment": None,
        "layer_count": n,
        "tensor_count": 0,
        "metadata_count": 1,
        "layers": layers,
        "metadata": {"general.name": model_name},
    }


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read(path):
    """Read and validate ``path``; returns a dict (raises TmaiError)."""
    return parse(_read_bytes(path))


def verify(path):
    """Validate ``path`` and check every layer checksum (raises TmaiError on the first bad one).

    Layers whose flag bit 0 is clear have no checksum and are reported as unchecked.
    """
    data = _read_bytes(path)
    info = parse(data)
    checked, unchecked = 0, 0
    for layer in info["layers"]:
        if not layer["has_checksum"]:
            unchecked += 1
            continue
        got = crc32c(memoryview(data)[layer["offset"] : layer["offset"] + layer["length"]])
        if got != layer["checksum"]:
            raise TmaiError(
                "checksum",
                "layer[%d] %r" % (layer["index"], layer["name"]),
                "layer checksum mismatch: stored %08x, computed %08x" % (layer["checksum"], got),
            )
        checked += 1
    return {"checked": checked, "unchecked": unchecked, "layers": len(info["layers"])}


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------


class _Strings:
    """String table: every string appended as it is added (no de-duplication,
    like the reference writer), with no separators."""

    def __init__(self):
        self.buf = bytearray()

    def add(self, s, limit, what):
        raw = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        raw.decode("utf-8")  # must be valid UTF-8
        if len(raw) > limit:
            raise TmaiError("write", what, "%d bytes, limit %d" % (len(raw), limit))
        off = len(self.buf)
        self.buf += raw
        return off, len(raw)


def _dtype_code(d):
    if isinstance(d, int):
        return d
    if d not in DTYPE_BY_NAME:
        raise TmaiError("write", "dtype", "unknown dtype %r" % (d,))
    return DTYPE_BY_NAME[d]


def _pad_to(f, pos, multiple):
    pad = (-pos) % multiple
    if pad:
        f.write(b"\0" * pad)
    return pos + pad


def write(path, layers, metadata=None, alignment=DEFAULT_ALIGNMENT):
    """Write a .tmai 2.0 file following "Writing a file" in docs/format.md.

    ``layers``: list of ``{"name": str, "tensors": [{"name", "dtype", "shape",
    "data": bytes, "source_type": int}], "data": bytes (optional, untyped bytes
    for a layer without tensors), "precision": int (optional override)}``.
    ``dtype`` is a code or a name from the dtype table.  ``metadata``: dict of
    str -> str (insertion order kept).  The file is written to a temporary
    file in the same directory, synced, then renamed over ``path``.
    """
    metadata = dict(metadata or {})
    if not _is_pow2(alignment) or not (MIN_ALIGNMENT <= alignment <= MAX_ALIGNMENT):
        raise TmaiError("write", "alignment", "alignment %d is not a power of two in 64..=2^30" % alignment)
    strings = _Strings()
    meta_entries = []
    for key, value in metadata.items():
        ko, kl = strings.add(key, MAX_KEY, "metadata key %r" % key)
        vo, vl = strings.add(value, MAX_VALUE, "metadata value of %r" % key)
        meta_entries.append(struct.pack("<QQII", ko, vo, kl, vl))

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmai-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            # 1. header placeholder
            f.write(b"\0" * HEADER_SIZE)
            pos = HEADER_SIZE
            layer_entries = []
            tensor_entries = []
            layer_names = set()
            for li, layer in enumerate(layers):
                lname = layer["name"]
                tensors = layer.get("tensors", [])
                if tensors and layer.get("data"):
                    raise TmaiError("write", "layer %r" % lname, "give either tensors or untyped data, not both")
                # 2. align the layer
                pos = _pad_to(f, pos, alignment)
                lstart = pos
                crc = Crc32c()
                first_tensor = len(tensor_entries)
                tnames = set()
                layer_dtypes = []
                largest = None  # (length, dtype, source_type) of the largest tensor, last among equals
                tensor_name_refs = []
                for t in tensors:
                    tname = t["name"]
                    if tname in tnames:
                        raise TmaiError("write", "layer %r" % lname, "duplicate tensor name %r" % tname)
                    tnames.add(tname)
                    dtype = _dtype_code(t["dtype"])
                    if dtype == DTYPE_MIXED or dtype not in DTYPES:
                        raise TmaiError("write", "tensor %r" % tname, "invalid tensor dtype %r" % (t["dtype"],))
                    source_type = int(t.get("source_type", 0))
                    if dtype != DTYPE_GGML and source_type != 0:
                        raise TmaiError("write", "tensor %r" % tname, "source_type must be 0 unless dtype is ggml")
                    shape = [int(d) for d in t["shape"]]
                    if len(shape) > MAX_RANK or any(d < 0 or d >= U64_LIMIT for d in shape):
                        raise TmaiError("write", "tensor %r" % tname, "bad shape %r" % (shape,))
                    blob = bytes(t["data"])
                    try:
                        want = expected_length(dtype, source_type, shape)
                    except ValueError as err:
                        raise TmaiError("write", "tensor %r" % tname, str(err)) from None
                    if want is not None and want != len(blob):
                        raise TmaiError(
                            "write", "tensor %r" % tname, "has %d bytes, %s%r needs %d" % (len(blob), _dtype_name(dtype), shape, want)
                        )
                    rel = pos - lstart
                    pad = (-rel) % TENSOR_ALIGN_IN_LAYER
                    if pad:
                        f.write(b"\0" * pad)
                        crc.update(b"\0" * pad)
                        pos += pad
                    toff = pos - lstart
                    f.write(blob)
                    crc.update(blob)
                    pos += len(blob)
                    tensor_name_refs.append(strings.add(tname, MAX_NAME, "tensor name %r" % tname))
                    dims = shape + [0] * (MAX_RANK - len(shape))
                    tensor_entries.append((dtype, len(shape), toff, len(blob), dims, source_type))
                    layer_dtypes.append(dtype)
                    if largest is None or len(blob) >= largest[0]:
                        largest = (len(blob), dtype, source_type)
                if not tensors and layer.get("data"):
                    blob = bytes(layer["data"])
                    f.write(blob)
                    crc.update(blob)
                    pos += len(blob)
                length = pos - lstart
                if lname in layer_names:
                    raise TmaiError("write", "layer %r" % lname, "duplicate layer name")
                layer_names.add(lname)
                lno, lnl = strings.add(lname, MAX_NAME, "layer name %r" % lname)
                if not layer_dtypes:
                    ldtype = DTYPE_OPAQUE
                elif all(d == layer_dtypes[0] for d in layer_dtypes):
                    ldtype = layer_dtypes[0]
                else:
                    ldtype = DTYPE_MIXED
                if largest is None:
                    precision = 8
                else:
                    precision = _precision_of(largest[1], largest[2])
                precision = int(layer.get("precision", precision))
                if not (1 <= precision <= 64):
                    raise TmaiError("write", "layer %r" % lname, "precision %d not in 1..=64" % precision)
                layer_entries.append(
                    (lstart, length, lno, lnl, crc.value(), first_tensor, len(tensors), ldtype, precision, tensor_name_refs)
                )
            # 3. tables
            pos = _pad_to(f, pos, 8)
            layer_table_offset = pos
            tables = bytearray()
            for (lstart, length, lno, lnl, lcrc, first, count, ldtype, prec, _) in layer_entries:
                tables += struct.pack(
                    "<QQQIIQQHHI8x", lstart, length, lno, lnl, lcrc, first, count, ldtype, prec, FLAG_CHECKSUM
                )
            tensor_table_offset = layer_table_offset + len(tables)
            refs = [r for entry in layer_entries for r in entry[9]]
            for (dtype, rank, toff, tlen, dims, source_type), (no, nl) in zip(tensor_entries, refs):
                tables += struct.pack("<QIHHQQ8QI4x", no, nl, dtype, rank, toff, tlen, *dims, source_type)
            metadata_table_offset = layer_table_offset + len(tables)
            for m in meta_entries:
                tables += m
            string_table_offset = layer_table_offset + len(tables)
            tables += strings.buf
            tables_crc = crc32c(tables)
            f.write(tables)
            file_length = pos + len(tables)
            # 4. header
            header = bytearray(
                struct.pack(
                    "<8sHHIQQQQQQQQQQ24sI",
                    MAGIC,
                    SUPPORTED_MAJOR,
                    KNOWN_MINOR,
                    HEADER_SIZE,
                    file_length,
                    alignment,
                    len(layer_entries),
                    layer_table_offset,
                    len(tensor_entries),
                    tensor_table_offset,
                    len(meta_entries),
                    metadata_table_offset,
                    string_table_offset,
                    len(strings.buf),
                    b"\0" * 24,
                    tables_crc,
                )
            )
            header += struct.pack("<I", crc32c(header[:124]))
            assert len(header) == HEADER_SIZE
            f.seek(0)
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        # 5. atomic replace
        os.replace(tmp, path)
        tmp = None
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return file_length


# --------------------------------------------------------------------------
# Sample
# --------------------------------------------------------------------------


def _f16_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def sample_layers():
    """Layers for ``write-sample``: several dtypes, GGML Q4_0, empty layers, unicode names."""
    f32 = struct.pack("<6f", 0.0, 1.0, -2.5, 3.25, 1e-3, 42.0)  # shape [2,3]
    f16 = struct.pack("<4H", *[_f16_bits(v) for v in (1.0, -1.0, 0.5, 65504.0)])
    # i4, 5 elements -> 3 bytes; element 2k in the low nibble of byte k
    vals = [1, -2, 7, -8, 3]
    nib = [v & 0xF for v in vals] + [0]
    i4 = bytes(nib[2 * k] | (nib[2 * k + 1] << 4) for k in range(3))
    # GGML Q4_0: 64 elements = 2 blocks of 18 bytes (f16 scale + 16 bytes of nibbles)
    q4 = b"".join(struct.pack("<H", _f16_bits(0.125)) + bytes(range(16 * b, 16 * b + 16)) for b in range(2))
    bf16 = struct.pack("<3H", 0x3F80, 0xC000, 0x0000)
    return [
        {"name": "embed", "tensors": [{"name": "weight", "dtype": "f32", "shape": [2, 3], "data": f32, "source_type": 0}]},
        {
            "name": "mixed.layer",
            "tensors": [
                {"name": "w_f16", "dtype": "f16", "shape": [2, 2], "data": f16, "source_type": 0},
                {"name": "w_i4", "dtype": "i4", "shape": [5], "data": i4, "source_type": 0},
                {"name": "scale", "dtype": "f32", "shape": [], "data": struct.pack("<f", 0.5), "source_type": 0},
                {"name": "w_bf16", "dtype": "bf16", "shape": [3, 1], "data": bf16, "source_type": 0},
            ],
        },
        {"name": "zero-length", "tensors": []},
        {
            "name": "ggml.q4_0",
            "tensors": [{"name": "blk.0.attn_q.weight", "dtype": "ggml", "shape": [2, 32], "data": q4, "source_type": 2}],
        },
        {
            "name": "ünïcødé-层-🚀",
            "tensors": [
                {"name": "权重", "dtype": "i8", "shape": [4], "data": bytes([1, 0xFF, 0x7F, 0x80]), "source_type": 0},
                {"name": "ok?", "dtype": "bool", "shape": [2], "data": bytes([1, 0]), "source_type": 0},
                {"name": "empty", "dtype": "u16", "shape": [0, 5], "data": b"", "source_type": 0},
            ],
        },
        {"name": "raw-bytes", "data": b"untyped payload \x00\x01\x02"},
        {"name": "", "tensors": [{"name": "", "dtype": "f64", "shape": [1], "data": struct.pack("<d", 3.5), "source_type": 0}]},
        {"name": "empty-last", "tensors": []},
    ]


SAMPLE_METADATA = {
    "general.name": "tmai-spec sample",
    "general.architecture": "test",
    "source.format": "python-spec",
    "json.value": json.dumps({"a": [1, 2, 3], "b": "ß"}, ensure_ascii=False),
    "clé unicode ✓": "valeur — ✓",
    "empty.value": "",
}


def write_sample(path, alignment=DEFAULT_ALIGNMENT):
    return write(path, sample_layers(), SAMPLE_METADATA, alignment=alignment)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _main(argv):
    if len(argv) != 3 or argv[1] not in ("read", "verify", "write-sample"):
        sys.stderr.write(__doc__.split("Library::")[0])
        return 2
    cmd, path = argv[1], argv[2]
    try:
        if cmd == "read":
            info = read(path)
            json.dump(info, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
        elif cmd == "verify":
            res = verify(path)
            print(
                "%s: ok (%d layer checksums verified, %d layers without checksum)"
                % (path, res["checked"], res["unchecked"])
            )
        else:
            n = write_sample(path)
            print("%s: wrote %d bytes" % (path, n))
    except TmaiError as e:
        sys.stderr.write("%s: invalid: %s\n" % (path, e))
        return 1
    except OSError as e:
        sys.stderr.write("%s: %s\n" % (path, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
