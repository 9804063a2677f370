//! Documented limits, checked before anything is allocated.

/// Largest header size a reader accepts (and the most bytes of "head" a
/// reader needs before it can locate the tables).
pub const MAX_HEADER_SIZE: usize = 4096;
/// Smallest allowed layer alignment.
pub const MIN_ALIGNMENT: u64 = 64;
/// Largest allowed layer alignment (1 GiB).
pub const MAX_ALIGNMENT: u64 = 1 << 30;
/// Default layer alignment used by the writer (the common page size).
pub const DEFAULT_ALIGNMENT: u64 = 4096;
/// Longest layer name, tensor name or metadata key, in bytes.
pub const MAX_NAME_LENGTH: u64 = 65_535;
/// Longest metadata value, in bytes (16 MiB).
pub const MAX_METADATA_VALUE_LENGTH: u64 = 16 << 20;
/// Tensors may have at most this many dimensions.
pub const MAX_RANK: usize = 8;
/// Alignment of each tensor's offset within its layer, as written by this crate's writer.
pub const TENSOR_ALIGNMENT: u64 = 64;
