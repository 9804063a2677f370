//! The GGUF v2/v3 header (llama.cpp), parsed from the first bytes of a file:
//! key/value metadata, tensor infos, alignment and the data offset. No I/O.
//!
//! A GGUF header's length is only known while parsing it, so [`GgufHeader::parse`]
//! takes the first bytes of the file and the file's length: when the bytes run
//! out before the header does, the error is [`SourceError::NeedMoreBytes`] with
//! the length needed so far (read at least that many, or double what was given,
//! and parse again); when the *file* runs out, the file is malformed.
//!
//! # Mapping (the one `tmai convert` uses)
//!
//! - **Tensor types.** GGML `F32`, `F16`, `BF16`, `F64`, `I8`, `I16`, `I32`, `I64`
//!   become the plain dtypes of the same name (`source_type` 0, see [`plain_dtype`]).
//!   Every other type becomes [`DType::Ggml`] with `source_type` = the GGML type id.
//!   The byte size of a tensor comes from the GGML block table
//!   ([`crate::dtype::ggml_block`]) when its type is known; for other types it is
//!   the distance to the next tensor's offset (or to the end of the file for the
//!   last one), which may include the alignment padding between tensors.
//! - **Shapes.** GGUF lists dimensions innermost first (`ne[0]` is the row length);
//!   [`ForeignTensor::shape`] lists them outermost first, so the order is reversed.
//! - **Metadata** is kept as typed values; strings and arrays as byte ranges of the
//!   file (see [`GgufValue`]), so nothing is allocated for a 150,000-entry vocabulary.
//!
//! Checks: magic, version 2 or 3, counts that fit the file, keys and tensor
//! names valid UTF-8 of at most [`limits::MAX_NAME_LENGTH`] bytes and unique, known
//! value types, arrays nested at most [`MAX_ARRAY_DEPTH`] deep whose elements fit
//! the file, `general.alignment` an unsigned power of two up to 1 GiB, at most
//! [`limits::MAX_RANK`] dimensions, block-quantized rows a whole number of
//! blocks, every tensor inside the data area, no two tensors overlapping.

use std::collections::HashSet;

use crate::dtype::ggml_block;
use crate::error::SourceError;
use crate::foreign::{ForeignTensor, element_count};
use crate::{DType, limits};

/// `format` of this module's errors.
const FORMAT: &str = "GGUF";

/// The GGUF magic, `"GGUF"`.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Deepest nesting of arrays accepted.
pub const MAX_ARRAY_DEPTH: u32 = 4;
/// Dimensions a tensor info may have (`.tmai` allows 8; GGML uses at most 4).
pub const MAX_DIMS: u32 = limits::MAX_RANK as u32;
/// `general.alignment` when the key is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// GGUF value type names, indexed by type id.
pub const TYPE_NAMES: [&str; 13] = [
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array",
    "uint64", "int64", "float64",
];

/// Smallest encoded size of a value of GGUF value type `ty` (for count checks); `None` for an unknown type.
pub fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// The plain dtype of a GGML type id, if it has one.
pub fn plain_dtype(ggml_type: u32) -> Option<DType> {
    Some(match ggml_type {
        0 => DType::F32,
        1 => DType::F16,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => return None,
    })
}

/// A metadata value. Strings and arrays are byte ranges of the file (absolute).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool` (any non-zero byte is true).
    Bool(bool),
    /// `string`: its bytes (not checked for UTF-8) are `start..end` of the file.
    String {
        /// Absolute start of the string's bytes (after its length).
        start: u64,
        /// Absolute end.
        end: u64,
    },
    /// `array`: `count` values of `element_type`; the encoded elements are `start..end` of the file.
    Array {
        /// GGUF value type id of the elements.
        element_type: u32,
        /// Number of elements.
        count: u64,
        /// Absolute start of the first element.
        start: u64,
        /// Absolute end of the last element.
        end: u64,
    },
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

/// One metadata key/value pair.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufMetadata {
    /// The key.
    pub key: String,
    /// Absolute offset of the key's length field.
    pub offset: u64,
    /// The value.
    pub value: GgufValue,
}

/// A validated GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub alignment: u64,
    /// Absolute offset of the data area: the end of the tensor infos rounded up to `alignment`.
    pub data_start: u64,
    /// The header's length: the end of the tensor infos (the bytes a reader needs).
    pub header_length: u64,
    /// The file length the header was checked against.
    pub file_length: u64,
    /// Metadata in file order.
    pub metadata: Vec<GgufMetadata>,
    /// Tensors (absolute ranges, `file` 0), in tensor-info order.
    pub tensors: Vec<ForeignTensor>,
}

impl GgufHeader {
    /// The metadata value of `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&GgufValue> {
        self.metadata
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| &entry.value)
    }

    /// The bytes of a string value, given bytes of the file from its start (`None` if `head` is too short).
    pub fn string_bytes<'h>(head: &'h [u8], value: &GgufValue) -> Option<&'h [u8]> {
        match *value {
            GgufValue::String { start, end } => {
                head.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
            }
            _ => None,
        }
    }
}

struct Cursor<'a> {
    head: &'a [u8],
    position: u64,
    file_length: u64,
}

impl Cursor<'_> {
    fn remaining(&self) -> u64 {
        self.file_length - self.position
    }

    /// Checks that `length` bytes at the position exist in the file (else malformed)
    /// and, when `in_head`, in `head` (else [`SourceError::NeedMoreBytes`]).
    fn need(
        &self,
        length: u64,
        in_head: bool,
        what: &dyn Fn() -> String,
    ) -> Result<(), SourceError> {
        if length > self.remaining() {
            return Err(SourceError::MalformedSourceHeader {
                format: FORMAT,
                what: what(),
                offset: self.position,
                problem: format!(
                    "needs {length} bytes but the file ends after {} more",
                    self.remaining()
                ),
            });
        }
        let end = self.position + length;
        if in_head && end > self.head.len() as u64 {
            return Err(SourceError::NeedMoreBytes {
                format: FORMAT,
                what: what(),
                needed: end,
                available: self.head.len() as u64,
            });
        }
        Ok(())
    }

    fn take(&mut self, length: u64, what: &dyn Fn() -> String) -> Result<&[u8], SourceError> {
        self.need(length, true, what)?;
        // `need` checked start..end lies inside `head`, so both fit in usize.
        let start = self.position as usize;
        self.position += length;
        Ok(&self.head[start..self.position as usize])
    }

    fn skip(&mut self, length: u64, what: &dyn Fn() -> String) -> Result<(), SourceError> {
        self.need(length, false, what)?;
        self.position += length;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], SourceError> {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(self.take(N as u64, what)?);
        Ok(bytes)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, SourceError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, SourceError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A key or tensor name: UTF-8 of at most [`limits::MAX_NAME_LENGTH`] bytes.
    fn name(&mut self, what: &dyn Fn() -> String) -> Result<String, SourceError> {
        let start = self.position;
        let length = self.u64(what)?;
        let malformed = |problem: String| SourceError::MalformedSourceHeader {
            format: FORMAT,
            what: what(),
            offset: start,
            problem,
        };
        if length > limits::MAX_NAME_LENGTH {
            self.need(length, false, &|| {
                format!("{} (string of {length} bytes)", what())
            })?;
            return Err(malformed(format!(
                "string length {length} exceeds the limit of {}",
                limits::MAX_NAME_LENGTH
            )));
        }
        let bytes = self.take(length, &|| format!("{} (string of {length} bytes)", what()))?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(error) => Err(malformed(format!(
                "not valid UTF-8 (error at byte {})",
                error.valid_up_to()
            ))),
        }
    }

    fn value(
        &mut self,
        ty: u32,
        depth: u32,
        what: &dyn Fn() -> String,
    ) -> Result<GgufValue, SourceError> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => GgufValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => {
                let length = self.u64(what)?;
                let start = self.position;
                self.skip(length, &|| format!("{} (string of {length} bytes)", what()))?;
                GgufValue::String {
                    start,
                    end: self.position,
                }
            }
            9 => self.array_value(depth, what)?,
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(SourceError::MalformedSourceHeader {
                    format: FORMAT,
                    what: what(),
                    offset: self.position,
                    problem: format!("unknown value type {other}"),
                });
            }
        })
    }

    fn array_value(
        &mut self,
        depth: u32,
        what: &dyn Fn() -> String,
    ) -> Result<GgufValue, SourceError> {
        let array_start = self.position;
        let malformed = |problem: String| SourceError::MalformedSourceHeader {
            format: FORMAT,
            what: what(),
            offset: array_start,
            problem,
        };
        if depth >= MAX_ARRAY_DEPTH {
            return Err(malformed(format!(
                "arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let element_type = self.u32(what)?;
        let count = self.u64(what)?;
        let Some(element_size) = min_value_size(element_type) else {
            return Err(malformed(format!(
                "unknown array element type {element_type}"
            )));
        };
        if count
            .checked_mul(element_size)
            .is_none_or(|needed| needed > self.remaining())
        {
            return Err(malformed(format!(
                "array of {count} {} values cannot fit in the {} bytes left in the file",
                TYPE_NAMES[element_type as usize],
                self.remaining()
            )));
        }
        let start = self.position;
        match element_type {
            // Fixed-size elements: skip them all at once.
            0..=7 | 10..=12 => self.skip(count * element_size, what)?,
            _ => {
                for _ in 0..count {
                    self.value(element_type, depth + 1, what)?;
                }
            }
        }
        Ok(GgufValue::Array {
            element_type,
            count,
            start,
            end: self.position,
        })
    }
}

fn malformed(what: impl Into<String>, offset: u64, problem: String) -> SourceError {
    SourceError::MalformedSourceHeader {
        format: FORMAT,
        what: what.into(),
        offset,
        problem,
    }
}

impl GgufHeader {
    /// Parses and validates the header from `head`, the first bytes of a file of
    /// `file_length` bytes. When `head` ends before the header does, the error is
    /// [`SourceError::NeedMoreBytes`]; a complete header needs
    /// [`GgufHeader::header_length`] bytes.
    pub fn parse(head: &[u8], file_length: u64) -> Result<GgufHeader, SourceError> {
        if head.len() as u64 > file_length {
            return Err(malformed(
                "input",
                0,
                format!(
                    "{} header bytes given for a file of {file_length} bytes",
                    head.len()
                ),
            ));
        }
        let mut cursor = Cursor {
            head,
            position: 0,
            file_length,
        };
        let magic: [u8; 4] = cursor.array(&|| "magic".to_owned())?;
        if magic != MAGIC {
            return Err(malformed(
                "magic",
                0,
                format!("bad magic {magic:02x?} (expected \"GGUF\")"),
            ));
        }
        let version = cursor.u32(&|| "version".to_owned())?;
        if !(2..=3).contains(&version) {
            let hint = if (2..=3).contains(&version.swap_bytes()) {
                " (a big-endian GGUF file, which is not supported)"
            } else if version == 1 {
                " (GGUF v1 is obsolete; re-export as v3)"
            } else {
                ""
            };
            return Err(malformed(
                "version",
                4,
                format!("unsupported version {version}{hint}; supported: 2, 3"),
            ));
        }
        let tensor_count = cursor.u64(&|| "tensor count".to_owned())?;
        let kv_count = cursor.u64(&|| "metadata key/value count".to_owned())?;
        let left = cursor.remaining();
        // A tensor info takes at least 24 bytes, a key/value pair at least 13.
        if tensor_count.checked_mul(24).is_none_or(|n| n > left) {
            return Err(malformed(
                "tensor count",
                8,
                format!("{tensor_count} is absurd: the file has {left} bytes left"),
            ));
        }
        if kv_count.checked_mul(13).is_none_or(|n| n > left) {
            return Err(malformed(
                "metadata key/value count",
                16,
                format!("{kv_count} is absurd: the file has {left} bytes left"),
            ));
        }
        // No capacity reserved: every entry pushed was read from `head`.
        let mut metadata = Vec::new();
        let mut keys = HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for kv_index in 0..kv_count {
            let key_offset = cursor.position;
            let key = cursor.name(&|| format!("metadata key {kv_index}"))?;
            let ty = cursor.u32(&|| format!("type of metadata key {key:?}"))?;
            if min_value_size(ty).is_none() {
                return Err(malformed(
                    format!("metadata key {key:?}"),
                    key_offset,
                    format!("unknown value type {ty}"),
                ));
            }
            let value = cursor.value(ty, 0, &|| format!("value of metadata key {key:?}"))?;
            if key == "general.alignment" {
                let stored = match value {
                    GgufValue::U8(value) => Some(u64::from(value)),
                    GgufValue::U16(value) => Some(u64::from(value)),
                    GgufValue::U32(value) => Some(u64::from(value)),
                    GgufValue::U64(value) => Some(value),
                    _ => None,
                };
                alignment = match stored {
                    Some(value) if value.is_power_of_two() && value <= limits::MAX_ALIGNMENT => {
                        value
                    }
                    _ => {
                        return Err(malformed(
                            "general.alignment",
                            key_offset,
                            format!(
                                "must be an unsigned power of two up to 1 GiB, found {value:?} of type {}",
                                TYPE_NAMES[ty as usize]
                            ),
                        ));
                    }
                };
            }
            if !keys.insert(key.clone()) {
                return Err(malformed(
                    format!("metadata key {key:?}"),
                    key_offset,
                    "duplicate key".to_owned(),
                ));
            }
            metadata.push(GgufMetadata {
                key,
                offset: key_offset,
                value,
            });
        }
        struct Info {
            name: String,
            dims: Vec<u64>,
            ggml_type: u32,
            offset: u64,
            info_offset: u64,
        }
        let mut infos = Vec::new();
        let mut names = HashSet::new();
        for tensor_index in 0..tensor_count {
            let info_offset = cursor.position;
            let name = cursor.name(&|| format!("name of tensor info {tensor_index}"))?;
            let what = || format!("tensor info {tensor_index} ({name:?})");
            let n_dims = cursor.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(malformed(
                    what(),
                    info_offset,
                    format!("{n_dims} dimensions (at most {MAX_DIMS} supported)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cursor.u64(&what)?);
            }
            let ggml_type = cursor.u32(&what)?;
            let offset = cursor.u64(&what)?;
            if !names.insert(name.clone()) {
                return Err(malformed(
                    what(),
                    info_offset,
                    "duplicate tensor name".to_owned(),
                ));
            }
            infos.push(Info {
                name,
                dims,
                ggml_type,
                offset,
                info_offset,
            });
        }
        let header_length = cursor.position;
        let data_start = header_length
            .checked_next_multiple_of(alignment)
            .unwrap_or(u64::MAX);
        if !infos.is_empty() && data_start > file_length {
            return Err(malformed(
                "tensor data",
                header_length,
                format!(
                    "would start at offset {data_start}, past the end of the file ({file_length} bytes)"
                ),
            ));
        }
        let data_length = file_length.saturating_sub(data_start);
        let out_of_bounds = |info: &Info, size: u64| SourceError::SourceTensorOutOfBounds {
            format: FORMAT,
            tensor: info.name.clone(),
            start: data_start.saturating_add(info.offset),
            end: data_start.saturating_add(info.offset).saturating_add(size),
            data_start,
            data_end: file_length,
        };
        // Sizes of tensors of unknown type come from the next offset.
        let mut by_offset: Vec<usize> = (0..infos.len()).collect();
        by_offset.sort_by_key(|&i| infos[i].offset);
        let mut sizes = vec![0u64; infos.len()];
        for &index in &by_offset {
            let info = &infos[index];
            let what = || {
                format!(
                    "tensor {:?} (info at offset {})",
                    info.name, info.info_offset
                )
            };
            if info.offset > data_length {
                return Err(out_of_bounds(info, 0));
            }
            let Some(elements) = element_count(&info.dims) else {
                return Err(malformed(
                    what(),
                    info.info_offset,
                    "element count overflows".to_owned(),
                ));
            };
            let size = match ggml_block(info.ggml_type) {
                Some((block_elements, block_bytes)) => {
                    let row = info.dims.first().copied().unwrap_or(1);
                    if row % block_elements != 0 {
                        return Err(SourceError::SourceTensorSizeMismatch {
                            format: FORMAT,
                            tensor: info.name.clone(),
                            dtype: format!("GGML type {}", info.ggml_type),
                            shape: info.dims.clone(),
                            expected: u128::MAX,
                            actual: 0,
                        });
                    }
                    // Saturating: a shape whose element count nearly fills u128 overflows
                    // here (found by the `gguf` fuzz target); such a size is never
                    // in bounds, so it becomes u64::MAX and fails the range check.
                    let bytes = (elements / u128::from(block_elements))
                        .saturating_mul(u128::from(block_bytes));
                    u64::try_from(bytes).unwrap_or(u64::MAX)
                }
                None => {
                    // The first offset past this one (a binary search: tensors sharing
                    // an offset must not make this quadratic).
                    let after = by_offset.partition_point(|&i| infos[i].offset <= info.offset);
                    let next = by_offset
                        .get(after)
                        .map_or(data_length, |&i| infos[i].offset);
                    next - info.offset
                }
            };
            if info
                .offset
                .checked_add(size)
                .is_none_or(|end| end > data_length)
            {
                return Err(out_of_bounds(info, size));
            }
            sizes[index] = size;
        }
        for pair in by_offset.windows(2) {
            let (first, second) = (&infos[pair[0]], &infos[pair[1]]);
            let first_end = first.offset + sizes[pair[0]];
            if second.offset < first_end && sizes[pair[1]] > 0 {
                return Err(SourceError::SourceTensorsOverlap {
                    format: FORMAT,
                    first: first.name.clone(),
                    first_start: data_start + first.offset,
                    first_end: data_start + first_end,
                    second: second.name.clone(),
                    second_start: data_start + second.offset,
                });
            }
        }
        let tensors = infos
            .into_iter()
            .zip(sizes)
            .map(|(info, size)| {
                let (dtype, source_type) = match plain_dtype(info.ggml_type) {
                    Some(dtype) => (dtype, 0),
                    None => (DType::Ggml, info.ggml_type),
                };
                ForeignTensor {
                    name: info.name,
                    dtype,
                    source_type,
                    shape: info.dims.into_iter().rev().collect(),
                    file: 0,
                    start: data_start + info.offset,
                    end: data_start + info.offset + size,
                }
            })
            .collect();
        Ok(GgufHeader {
            version,
            alignment,
            data_start,
            header_length,
            file_length,
            metadata,
            tensors,
        })
    }
}
