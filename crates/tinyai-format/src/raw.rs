//! On-disk structures, byte for byte as `docs/format.md` specifies them.
//!
//! All integers are little-endian (`zerocopy::little_endian`), every struct is
//! `#[repr(C)]` with alignment 1, so a table can be viewed in place from any
//! byte offset of any buffer without copying.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The 8 magic bytes that open every v2 file: `"TMAI\r\n\x1a\n"`.
pub const MAGIC_V2: [u8; 8] = *b"TMAI\r\n\x1a\n";
/// The 4 magic bytes of a legacy v1 file (`0x544D4149` stored little-endian).
pub const MAGIC_V1: [u8; 4] = [0x49, 0x41, 0x4D, 0x54];

/// Size of the fixed v2 header.
pub const HEADER_SIZE: usize = 128;
/// Size of one v2 layer-table entry.
pub const LAYER_ENTRY_SIZE: usize = 64;
/// Size of one v2 tensor-table entry.
pub const TENSOR_ENTRY_SIZE: usize = 104;
/// Size of one v2 metadata-table entry.
pub const METADATA_ENTRY_SIZE: usize = 24;
/// Size of the legacy v1 header.
pub const V1_HEADER_SIZE: usize = 256;
/// Size of one legacy v1 layer-table entry.
pub const V1_LAYER_ENTRY_SIZE: usize = 32;

/// Layer flag: the `checksum` field holds the CRC-32C of the layer's bytes.
pub const LAYER_FLAG_HAS_CHECKSUM: u32 = 1;

/// The v2 file header (128 bytes at offset 0).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    /// [`MAGIC_V2`].
    pub magic: [u8; 8],
    /// Major version (2).
    pub major: U16,
    /// Minor version (0).
    pub minor: U16,
    /// Size of the header in bytes (128 for 2.0).
    pub header_size: U32,
    /// Total file length in bytes.
    pub file_length: U64,
    /// Layer data alignment (power of two, >= 64).
    pub alignment: U64,
    /// Number of layers.
    pub layer_count: U64,
    /// Absolute offset of the layer table.
    pub layer_table_offset: U64,
    /// Number of tensors.
    pub tensor_count: U64,
    /// Absolute offset of the tensor table.
    pub tensor_table_offset: U64,
    /// Number of metadata entries.
    pub metadata_count: U64,
    /// Absolute offset of the metadata table.
    pub metadata_table_offset: U64,
    /// Absolute offset of the string table.
    pub string_table_offset: U64,
    /// Length of the string table in bytes.
    pub string_table_length: U64,
    /// Reserved, written as zero.
    pub reserved: [u8; 24],
    /// CRC-32C of the table region (layer table start to string table end).
    pub tables_crc32c: U32,
    /// CRC-32C of header bytes 0..124 followed by 128..header_size.
    pub header_crc32c: U32,
}

/// One v2 layer-table entry (64 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawLayer {
    /// Absolute offset of the layer's first byte.
    pub offset: U64,
    /// Length of the layer in bytes.
    pub length: U64,
    /// Offset of the name within the string table.
    pub name_offset: U64,
    /// Length of the name in bytes.
    pub name_length: U32,
    /// CRC-32C of the layer's bytes (valid when flag bit 0 is set).
    pub checksum: U32,
    /// Index of the layer's first tensor in the tensor table.
    pub first_tensor: U64,
    /// Number of tensors in the layer.
    pub tensor_count: U64,
    /// The layer's dtype code (`0xFFFF` = mixed).
    pub dtype: U16,
    /// Bits per weight.
    pub precision_bits: U16,
    /// Flags (bit 0: has checksum).
    pub flags: U32,
    /// Reserved, written as zero.
    pub reserved: [u8; 8],
}

/// One v2 tensor-table entry (104 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawTensor {
    /// Offset of the name within the string table.
    pub name_offset: U64,
    /// Length of the name in bytes.
    pub name_length: U32,
    /// Dtype code.
    pub dtype: U16,
    /// Number of dimensions (0..=8).
    pub rank: U16,
    /// Offset of the tensor's first byte within its layer.
    pub offset: U64,
    /// Length in bytes.
    pub length: U64,
    /// Dimensions, outermost first; entries at index >= rank are zero.
    pub shape: [U64; 8],
    /// Source-format type id (GGML type for dtype `ggml`), otherwise 0.
    pub source_type: U32,
    /// Reserved, written as zero.
    pub reserved: [u8; 4],
}

/// One v2 metadata-table entry (24 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawMetadata {
    /// Offset of the key within the string table.
    pub key_offset: U64,
    /// Offset of the value within the string table.
    pub value_offset: U64,
    /// Key length in bytes.
    pub key_length: U32,
    /// Value length in bytes.
    pub value_length: U32,
}

/// The legacy v1 header (256 bytes at offset 0).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawV1Header {
    /// [`MAGIC_V1`].
    pub magic: [u8; 4],
    /// Version (1).
    pub version: U32,
    /// Number of layers.
    pub layer_count: U32,
    /// Unused.
    pub unused0: U32,
    /// NUL-padded model name.
    pub name: [u8; 64],
    /// Unused.
    pub unused1: [u8; 176],
}

/// One legacy v1 layer-table entry (32 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawV1Layer {
    /// Absolute offset.
    pub offset: U32,
    /// Length in bytes.
    pub size: U32,
    /// Bits per weight.
    pub precision: U32,
    /// Unused.
    pub unused: [u8; 20],
}

const _: () = {
    assert!(std::mem::size_of::<RawHeader>() == HEADER_SIZE);
    assert!(std::mem::size_of::<RawLayer>() == LAYER_ENTRY_SIZE);
    assert!(std::mem::size_of::<RawTensor>() == TENSOR_ENTRY_SIZE);
    assert!(std::mem::size_of::<RawMetadata>() == METADATA_ENTRY_SIZE);
    assert!(std::mem::size_of::<RawV1Header>() == V1_HEADER_SIZE);
    assert!(std::mem::size_of::<RawV1Layer>() == V1_LAYER_ENTRY_SIZE);
};
