//! The one error type of this crate.

use crate::DType;

/// Which table a [`FormatError::TableOutOfBounds`] or [`FormatError::TablesOverlap`] talks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The layer table (v2: 64-byte entries; v1: 32-byte entries).
    Layers,
    /// The tensor table (104-byte entries).
    Tensors,
    /// The metadata table (24-byte entries).
    Metadata,
    /// The string table (raw UTF-8 bytes).
    Strings,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Table::Layers => "layer table",
            Table::Tensors => "tensor table",
            Table::Metadata => "metadata table",
            Table::Strings => "string table",
        })
    }
}

/// What a string in the string table belongs to, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringOwner {
    /// The name of layer `0`.
    LayerName(u64),
    /// The name of tensor `0` (index into the tensor table).
    TensorName(u64),
    /// The key of metadata entry `0`.
    MetadataKey(u64),
    /// The value of metadata entry `0`.
    MetadataValue(u64),
    /// The model name of a legacy v1 header.
    LegacyModelName,
}

impl std::fmt::Display for StringOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StringOwner::LayerName(i) => write!(f, "name of layer {i}"),
            StringOwner::TensorName(i) => write!(f, "name of tensor {i}"),
            StringOwner::MetadataKey(i) => write!(f, "key of metadata entry {i}"),
            StringOwner::MetadataValue(i) => write!(f, "value of metadata entry {i}"),
            StringOwner::LegacyModelName => f.write_str("legacy v1 model name"),
        }
    }
}

/// Everything that can be wrong with a `.tmai` file, or with a request made of one.
///
/// Every variant says what was wrong and where (layer index, tensor index, byte offset).
/// Layer and tensor indices are 0-based positions in their tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input is shorter than the structure that must be there.
    #[error("file truncated: {what} needs {needed} bytes but only {available} are present")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The first bytes are neither the v2 magic nor the legacy v1 magic.
    #[error("not a .tmai file: bad magic bytes {found:02x?} at offset 0")]
    BadMagic {
        /// The first (up to) 8 bytes of the input.
        found: Vec<u8>,
    },
    /// The file is a model in another format (detected by its content), not `.tmai`.
    #[error(
        "this is {} (detected by its content), not a .tmai model: convert it with `tmai convert <input> <output.tmai>`, which adds page alignment and checksums",
        kind.describe()
    )]
    ForeignFormat {
        /// What the file is.
        kind: crate::foreign::FileKind,
    },
    /// A major version this reader does not implement (v2 header major, or v1 header version field).
    #[error("unsupported .tmai version {major}.{minor} (this reader supports 1.x legacy and 2.x)")]
    UnsupportedVersion {
        /// Major version found.
        major: u32,
        /// Minor version found.
        minor: u32,
    },
    /// `header_size` is below 128, above 4096 or not a multiple of 8.
    #[error("invalid header size {header_size} (must be 128..=4096 and a multiple of 8)")]
    InvalidHeaderSize {
        /// The stored header size.
        header_size: u32,
    },
    /// The header's CRC-32C does not match its bytes.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksumMismatch {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// The CRC-32C over the table region does not match.
    #[error(
        "table checksum mismatch: stored {stored:#010x}, computed {computed:#010x} over bytes {start}..{end}"
    )]
    TablesChecksumMismatch {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
        /// Start of the table region.
        start: u64,
        /// End of the table region.
        end: u64,
    },
    /// The header's `file_length` differs from the actual input length (truncated or extended file).
    #[error(
        "file length mismatch: header says {expected} bytes, file has {actual} (truncated or appended to)"
    )]
    FileLengthMismatch {
        /// Length recorded in the header.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The alignment is not a power of two, or is below 64, or above 1 GiB.
    #[error("invalid alignment {alignment} (must be a power of two in 64..=1073741824)")]
    InvalidAlignment {
        /// The stored alignment.
        alignment: u64,
    },
    /// A count so large its table cannot fit in the file.
    #[error(
        "absurd {table} count {count}: {count} entries of {entry_size} bytes cannot fit in a {file_length}-byte file"
    )]
    AbsurdCount {
        /// Which table.
        table: Table,
        /// The stored count.
        count: u64,
        /// Size of one entry.
        entry_size: u64,
        /// The file length.
        file_length: u64,
    },
    /// A table lies (partly) outside the file or inside the header.
    #[error(
        "{table} at offset {offset} with length {length} is outside the file ({file_length} bytes) or inside the header"
    )]
    TableOutOfBounds {
        /// Which table.
        table: Table,
        /// Stored offset.
        offset: u64,
        /// Computed length.
        length: u64,
        /// The file length.
        file_length: u64,
    },
    /// A table offset is not a multiple of 8.
    #[error("{table} offset {offset} is not a multiple of 8")]
    MisalignedTable {
        /// Which table.
        table: Table,
        /// Stored offset.
        offset: u64,
    },
    /// Tables are out of the required order (layers, tensors, metadata, strings) or overlap.
    #[error(
        "{second} at offset {offset} overlaps or precedes the end of the {first} ({first_end})"
    )]
    TablesOverlap {
        /// The earlier table.
        first: Table,
        /// The later table.
        second: Table,
        /// End of the earlier table.
        first_end: u64,
        /// Start of the later table.
        offset: u64,
    },
    /// `offset + length` of a layer overflows 64 bits.
    #[error("layer {layer}: offset {offset} + length {length} overflows")]
    LayerOverflow {
        /// Layer index.
        layer: u64,
        /// Stored offset.
        offset: u64,
        /// Stored length.
        length: u64,
    },
    /// A layer's bytes extend past the end of the file.
    #[error(
        "layer {layer}: bytes {offset}..{end} extend past the end of the file ({file_length} bytes)"
    )]
    LayerOutOfBounds {
        /// Layer index.
        layer: u64,
        /// Stored offset.
        offset: u64,
        /// offset + length.
        end: u64,
        /// The file length.
        file_length: u64,
    },
    /// A layer starts inside the header or the layer table region.
    #[error(
        "layer {layer}: bytes {offset}..{end} overlap the header or the tables ({region_start}..{region_end})"
    )]
    LayerOverlapsTables {
        /// Layer index.
        layer: u64,
        /// Stored offset.
        offset: u64,
        /// offset + length.
        end: u64,
        /// Start of the region it overlaps.
        region_start: u64,
        /// End of the region it overlaps.
        region_end: u64,
    },
    /// A layer overlaps an earlier one (v2 also requires ascending offsets).
    #[error(
        "layer {layer}: starts at {offset}, before the end ({previous_end}) of layer {previous}"
    )]
    LayerOverlap {
        /// Layer index.
        layer: u64,
        /// Its offset.
        offset: u64,
        /// The layer it overlaps.
        previous: u64,
        /// End of that layer.
        previous_end: u64,
    },
    /// A layer offset is not a multiple of the file's alignment.
    #[error("layer {layer}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedLayer {
        /// Layer index.
        layer: u64,
        /// Stored offset.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A precision outside 1..=64 bits.
    #[error("layer {layer}: precision of {bits} bits is outside 1..=64")]
    InvalidPrecision {
        /// Layer index.
        layer: u64,
        /// Stored precision.
        bits: u32,
    },
    /// A layer's tensor range is not the next contiguous run of the tensor table.
    #[error(
        "layer {layer}: tensor range {first}..+{count} is not contiguous or exceeds the tensor table ({tensor_count} tensors); expected to start at {expected_first}"
    )]
    TensorRangeInvalid {
        /// Layer index.
        layer: u64,
        /// Stored first tensor.
        first: u64,
        /// Stored tensor count.
        count: u64,
        /// Expected first tensor (sum of earlier counts).
        expected_first: u64,
        /// Total tensors.
        tensor_count: u64,
    },
    /// The layers do not account for every tensor.
    #[error("the layers reference {referenced} tensors but the tensor table has {tensor_count}")]
    OrphanTensors {
        /// Sum of layer tensor counts.
        referenced: u64,
        /// Tensor table count.
        tensor_count: u64,
    },
    /// A tensor's bytes extend outside its layer.
    #[error(
        "tensor {tensor} (layer {layer}): bytes {offset}..+{length} are outside the layer's {layer_length} bytes"
    )]
    TensorOutOfLayer {
        /// Tensor index.
        tensor: u64,
        /// Layer index.
        layer: u64,
        /// Offset within the layer.
        offset: u64,
        /// Tensor length.
        length: u64,
        /// Layer length.
        layer_length: u64,
    },
    /// A tensor's rank is above 8, or dimensions past its rank are non-zero.
    #[error(
        "tensor {tensor}: invalid rank {rank} or non-zero dimension past the rank (at most 8 dimensions)"
    )]
    InvalidRank {
        /// Tensor index.
        tensor: u64,
        /// Stored rank.
        rank: u16,
    },
    /// A tensor's byte length disagrees with its dtype and shape.
    #[error(
        "tensor {tensor}: dtype {dtype} with shape {shape:?} {} but the entry says {actual} bytes",
        describe_expected(*.expected)
    )]
    TensorSizeMismatch {
        /// Tensor index.
        tensor: u64,
        /// Its dtype.
        dtype: DType,
        /// Its shape.
        shape: Vec<u64>,
        /// Bytes implied by dtype and shape (None if the element count overflows).
        expected: u128,
        /// Stored byte length.
        actual: u64,
    },
    /// A dtype code this reader does not know, in a file whose minor version this reader implements.
    #[error("{what} {index}: unknown dtype code {code}")]
    UnknownDType {
        /// "layer" or "tensor".
        what: &'static str,
        /// Index.
        index: u64,
        /// Stored code.
        code: u16,
    },
    /// A string reference points outside the string table.
    #[error(
        "{owner}: string at {offset}..+{length} lies outside the string table ({table_length} bytes)"
    )]
    StringOutOfBounds {
        /// Whose string.
        owner: StringOwner,
        /// Offset within the string table.
        offset: u64,
        /// Length.
        length: u64,
        /// String table length.
        table_length: u64,
    },
    /// A string is longer than the documented limit.
    #[error("{owner}: string of {length} bytes exceeds the limit of {limit}")]
    StringTooLong {
        /// Whose string.
        owner: StringOwner,
        /// Its length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{owner}: not valid UTF-8 (error at byte {valid_up_to})")]
    InvalidUtf8 {
        /// Whose string.
        owner: StringOwner,
        /// Bytes that were valid.
        valid_up_to: usize,
    },
    /// Two layers share a name.
    #[error("layer {layer}: duplicate layer name {name:?} (first used by layer {first})")]
    DuplicateLayerName {
        /// Second layer with the name.
        layer: u64,
        /// First layer with the name.
        first: u64,
        /// The name.
        name: String,
    },
    /// Two tensors of one layer share a name.
    #[error("tensor {tensor} (layer {layer}): duplicate tensor name {name:?} within the layer")]
    DuplicateTensorName {
        /// Tensor index.
        tensor: u64,
        /// Layer index.
        layer: u64,
        /// The name.
        name: String,
    },
    /// Two metadata entries share a key.
    #[error("metadata entry {entry}: duplicate key {key:?}")]
    DuplicateMetadataKey {
        /// Entry index.
        entry: u64,
        /// The key.
        key: String,
    },
    /// A layer's bytes do not match its stored CRC-32C.
    #[error(
        "layer {layer}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}); the layer's bytes {offset}..+{length} are corrupt"
    )]
    ChecksumMismatch {
        /// Layer index.
        layer: u64,
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
        /// Layer offset.
        offset: u64,
        /// Layer length.
        length: u64,
    },
    /// The layer has no checksum (legacy v1 files, or a writer that left it out).
    #[error("layer {layer} has no checksum to verify")]
    NoChecksum {
        /// Layer index.
        layer: u64,
    },
    /// A layer index past the end of the layer table.
    #[error("layer index {index} out of range (model has {count} layers)")]
    LayerIndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Layer count.
        count: u64,
    },
    /// Layer bytes were requested of a model parsed from its tables alone.
    #[error("layer data is not available: the model was parsed from its header and tables only")]
    NoLayerData,
    /// The writer was given a tensor whose data or description is inconsistent.
    #[error("invalid tensor {name:?}: {reason}")]
    InvalidTensorSpec {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A writer-side limit (name length, metadata size, counts) was exceeded or a name was reused.
    #[error("invalid writer input: {0}")]
    InvalidInput(String),
    /// A safetensors, safetensors index or GGUF header is incomplete or malformed (boxed: see [`SourceError`]).
    #[error(transparent)]
    Source(Box<SourceError>),
    /// An I/O error while writing or reading a stream.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// What can be wrong with the header of a safetensors file, a sharded set's index or a GGUF file
/// (see [`crate::safetensors`], [`crate::gguf`]); carried by [`FormatError::Source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A header parser needs more of the file's first bytes than it was given.
    ///
    /// Not a defect of the file: read the first `needed` bytes (never more than the
    /// file holds) and parse again. The safetensors header needs `8 + N` bytes, `N`
    /// being its first 8 bytes; a GGUF header's length is only known while parsing.
    #[error(
        "{format} header: {what} needs the first {needed} bytes of the file but only {available} were given"
    )]
    NeedMoreBytes {
        /// `"safetensors"` or `"GGUF"`.
        format: &'static str,
        /// What was being read.
        what: String,
        /// How many bytes from the start of the file to pass next time.
        needed: u64,
        /// How many were given.
        available: u64,
    },
    /// A safetensors, safetensors index or GGUF header is malformed.
    #[error("{format} header: {what} at byte {offset}: {problem}")]
    MalformedSourceHeader {
        /// `"safetensors"`, `"safetensors index"` or `"GGUF"`.
        format: &'static str,
        /// What was being read (a field, a tensor by name, a metadata key).
        what: String,
        /// Byte offset in the file (or index JSON) where it was read.
        offset: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// A tensor of a safetensors or GGUF file has an element type this crate cannot represent.
    #[error("{format} header: tensor {tensor:?}: unsupported dtype {dtype:?}")]
    UnsupportedSourceDType {
        /// `"safetensors"` or `"GGUF"`.
        format: &'static str,
        /// Tensor name.
        tensor: String,
        /// The dtype as the file spells it.
        dtype: String,
    },
    /// A tensor's byte length disagrees with its dtype and shape.
    #[error(
        "{format} header: tensor {tensor:?}: dtype {dtype} with shape {shape:?} {} but its data holds {actual} bytes",
        describe_source_expected(*.expected)
    )]
    SourceTensorSizeMismatch {
        /// `"safetensors"` or `"GGUF"`.
        format: &'static str,
        /// Tensor name.
        tensor: String,
        /// The dtype as the file spells it.
        dtype: String,
        /// Shape as the file lists it.
        shape: Vec<u64>,
        /// Bytes implied by dtype and shape (`u128::MAX` if there is no valid size).
        expected: u128,
        /// Bytes its offsets give it.
        actual: u64,
    },
    /// A tensor's data lies (partly) outside the file's data area.
    #[error(
        "{format} header: tensor {tensor:?}: data {start}..{end} (absolute) would run past the end of the data area {data_start}..{data_end}"
    )]
    SourceTensorOutOfBounds {
        /// `"safetensors"` or `"GGUF"`.
        format: &'static str,
        /// Tensor name.
        tensor: String,
        /// Absolute start (saturated at `u64::MAX` on overflow).
        start: u64,
        /// Absolute end (saturated at `u64::MAX` on overflow).
        end: u64,
        /// Absolute start of the data area.
        data_start: u64,
        /// Absolute end of the data area (the file length).
        data_end: u64,
    },
    /// Two tensors' data overlap.
    #[error(
        "{format} header: tensors {first:?} (data {first_start}..{first_end}) and {second:?} (data from {second_start}) overlap"
    )]
    SourceTensorsOverlap {
        /// `"safetensors"` or `"GGUF"`.
        format: &'static str,
        /// The tensor that starts first.
        first: String,
        /// Its absolute start.
        first_start: u64,
        /// Its absolute end.
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Its absolute start.
        second_start: u64,
    },
}

impl From<SourceError> for FormatError {
    fn from(error: SourceError) -> FormatError {
        FormatError::Source(Box::new(error))
    }
}

impl FormatError {
    /// The [`SourceError`] of a [`FormatError::Source`].
    pub fn source_error(&self) -> Option<&SourceError> {
        match self {
            FormatError::Source(error) => Some(error),
            _ => None,
        }
    }

    /// For [`SourceError::NeedMoreBytes`]: how many bytes from the start of the file to pass next time.
    pub fn bytes_needed(&self) -> Option<u64> {
        match self.source_error()? {
            SourceError::NeedMoreBytes { needed, .. } => Some(*needed),
            _ => None,
        }
    }
}

fn describe_source_expected(expected: u128) -> String {
    if expected == u128::MAX {
        "needs too many bytes (the element count overflows, or a row is not a whole number of blocks)"
            .to_owned()
    } else {
        format!("needs {expected} bytes")
    }
}

fn describe_expected(expected: u128) -> String {
    if expected == u128::MAX {
        "has no valid byte size (the element count overflows or is not a whole number of blocks)"
            .to_owned()
    } else {
        format!("needs {expected} bytes")
    }
}

impl FormatError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FormatError {
        let context = context.into();
        move |source| FormatError::Io { context, source }
    }
}
