//! Element types and their sizes.

/// The element type of a tensor (and, summarised, of a layer).
///
/// Codes are stored as little-endian `u16`; see `docs/format.md` for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// Untyped bytes: no shape/size relation is checked.
    Opaque,
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE 754 binary64.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Boolean, one byte (0 or 1).
    Bool,
    /// 8-bit float, E4M3 (fn variant).
    F8E4M3,
    /// 8-bit float, E5M2.
    F8E5M2,
    /// Signed 4-bit integers, two per byte, low nibble first.
    I4,
    /// A GGML block-quantized (or other GGML) type; the tensor's `source_type` holds the GGML type id.
    Ggml,
    /// Layer-level only: the layer's tensors have different dtypes.
    Mixed,
    /// A code this reader does not know (only accepted in files of a newer minor version).
    Unknown(u16),
}

impl DType {
    /// Decodes a stored code.
    pub fn from_code(code: u16) -> DType {
        match code {
            0 => DType::Opaque,
            1 => DType::F32,
            2 => DType::F16,
            3 => DType::BF16,
            4 => DType::F64,
            5 => DType::I8,
            6 => DType::I16,
            7 => DType::I32,
            8 => DType::I64,
            9 => DType::U8,
            10 => DType::U16,
            11 => DType::U32,
            12 => DType::U64,
            13 => DType::Bool,
            14 => DType::F8E4M3,
            15 => DType::F8E5M2,
            16 => DType::I4,
            17 => DType::Ggml,
            0xFFFF => DType::Mixed,
            other => DType::Unknown(other),
        }
    }

    /// The stored code.
    pub fn code(self) -> u16 {
        match self {
            DType::Opaque => 0,
            DType::F32 => 1,
            DType::F16 => 2,
            DType::BF16 => 3,
            DType::F64 => 4,
            DType::I8 => 5,
            DType::I16 => 6,
            DType::I32 => 7,
            DType::I64 => 8,
            DType::U8 => 9,
            DType::U16 => 10,
            DType::U32 => 11,
            DType::U64 => 12,
            DType::Bool => 13,
            DType::F8E4M3 => 14,
            DType::F8E5M2 => 15,
            DType::I4 => 16,
            DType::Ggml => 17,
            DType::Mixed => 0xFFFF,
            DType::Unknown(code) => code,
        }
    }

    /// Bits per element for fixed-size element types; `None` for opaque, GGML, mixed and unknown.
    pub fn bits(self) -> Option<u32> {
        Some(match self {
            DType::F64 | DType::I64 | DType::U64 => 64,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 16,
            DType::I8 | DType::U8 | DType::Bool | DType::F8E4M3 | DType::F8E5M2 => 8,
            DType::I4 => 4,
            DType::Opaque | DType::Ggml | DType::Mixed | DType::Unknown(_) => return None,
        })
    }

    /// Lower-case name as used in docs and JSON output (`"f32"`, `"bf16"`, `"ggml"` …).
    pub fn name(self) -> &'static str {
        match self {
            DType::Opaque => "opaque",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
            DType::F8E4M3 => "f8_e4m3",
            DType::F8E5M2 => "f8_e5m2",
            DType::I4 => "i4",
            DType::Ggml => "ggml",
            DType::Mixed => "mixed",
            DType::Unknown(_) => "unknown",
        }
    }

    /// Parses a [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        (0u16..=17)
            .map(DType::from_code)
            .chain([DType::Mixed])
            .find(|dtype| dtype.name() == name)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DType::Unknown(code) => write!(f, "unknown({code})"),
            other => f.write_str(other.name()),
        }
    }
}

/// GGML tensor types whose block layout this crate knows: `(type id, name, elements per block, bytes per block)`.
///
/// Used to check the byte length of `DType::Ggml` tensors; a GGML type id not in
/// this table is accepted without a size check.
pub const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (31, "Q4_0_4_4", 32, 18),
    (32, "Q4_0_4_8", 32, 18),
    (33, "Q4_0_8_8", 32, 18),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// Block layout `(elements per block, bytes per block)` of a GGML type id, if known.
pub fn ggml_block(type_id: u32) -> Option<(u64, u64)> {
    GGML_TYPES
        .iter()
        .find(|entry| entry.0 == type_id)
        .map(|entry| (entry.2, entry.3))
}

/// Bytes needed by `element_count` elements of `dtype` (GGML types use `source_type`).
///
/// Returns `None` when the size is not defined by dtype and shape (opaque, mixed,
/// unknown, unknown GGML type) or the element count is not a whole number of GGML blocks.
pub fn expected_byte_length(dtype: DType, source_type: u32, element_count: u128) -> Option<u128> {
    // A size that overflows u128 matches no stored u64 length: report it as u128::MAX.
    if let Some(bits) = dtype.bits() {
        return Some(
            element_count
                .checked_mul(u128::from(bits))
                .map_or(u128::MAX, |total_bits| total_bits.div_ceil(8)),
        );
    }
    if dtype == DType::Ggml {
        let (block_elements, block_bytes) = ggml_block(source_type)?;
        let block_elements = u128::from(block_elements);
        if !element_count.is_multiple_of(block_elements) {
            return Some(u128::MAX);
        }
        return Some((element_count / block_elements).saturating_mul(u128::from(block_bytes)));
    }
    None
}
