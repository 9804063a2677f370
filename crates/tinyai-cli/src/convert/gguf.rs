//! Reading GGUF v2/v3 files (llama.cpp) without loading them: the header, the
//! key/value metadata and the tensor infos are parsed with every length checked
//! against the file size before anything is allocated; tensor data is streamed later.
//!
//! # Mapping
//!
//! - **Tensor types.** GGML `F32`, `F16`, `BF16`, `F64`, `I8`, `I16`, `I32`, `I64`
//!   become the plain dtypes of the same name (`source_type` 0). Every other type
//!   (quantized `Q4_0` … `Q8_K`, `IQ*`, `TQ*`, types newer than this tool) becomes
//!   [`DType::Ggml`] with `source_type` = the GGML type id, bytes copied unchanged.
//!   The byte size of a tensor comes from the GGML block table
//!   ([`tinyai_format::dtype::ggml_block`]) when its type is known; for other types it
//!   is the distance to the next tensor's offset (or to the end of the file for the
//!   last one), which may include the alignment padding GGUF puts between tensors.
//! - **Shapes.** GGUF lists dimensions innermost first (`ne[0]` is the row length);
//!   `.tmai` lists them outermost first, so the order is reversed:
//!   a GGUF `[4096, 32000]` tensor has `.tmai` shape `[32000, 4096]`.
//! - **Metadata.** Every key/value pair becomes a `.tmai` metadata entry with the
//!   same key. Integers and floats are written in decimal (Rust `Display`; floats
//!   shortest round-trip, NaN/inf as `NaN`/`inf`), booleans as `true`/`false`,
//!   strings unchanged (invalid UTF-8 replaced by U+FFFD). Arrays are JSON-encoded
//!   (`[1,2,3]`, `["a","b"]`, nested arrays nested, non-finite floats as `null`).
//!   A value whose encoding would exceed 16 MiB (the format's limit), or any value
//!   once 64 MiB of metadata have been collected, is replaced by a JSON summary
//!   `{"omitted":"array","element_type":"string","count":151936}` (or
//!   `{"omitted":"string","length":N}`). The converter adds `source.format` = `gguf`
//!   and `source.gguf_version`.

use std::collections::HashSet;
use std::io::{BufReader, Read};

use tinyai_format::dtype::ggml_block;
use tinyai_format::{DType, limits};

use super::{MetadataList, SourceTensor};
use crate::error::{CliError, Result};
use crate::source::SourceFile;

use tinyai_format::gguf::{
    DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, TYPE_NAMES, min_value_size,
};
pub use tinyai_format::gguf::{MAGIC, plain_dtype};

/// Largest metadata value kept verbatim (the `.tmai` format's own limit).
const VALUE_LIMIT: usize = limits::MAX_METADATA_VALUE_LENGTH as usize;
/// Once this much metadata is collected, further strings and arrays are summarised.
const TOTAL_METADATA_LIMIT: usize = 64 << 20;

/// A parsed GGUF file: tensors in tensor-info order and metadata.
#[derive(Debug)]
pub struct GgufFile {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Tensors with absolute offsets, in tensor-info order.
    pub tensors: Vec<SourceTensor>,
    /// Key/value metadata converted to strings (see the module docs).
    pub metadata: Vec<(String, String)>,
}

struct Cursor<'a, R> {
    reader: BufReader<R>,
    position: u64,
    file_length: u64,
    source: &'a SourceFile,
    metadata_bytes: usize,
}

impl<R: Read> Cursor<'_, R> {
    fn bad(&self, message: String) -> CliError {
        CliError::bad_input(self.source.path(), format!("GGUF: {message}"))
    }

    fn remaining(&self) -> u64 {
        self.file_length - self.position
    }

    fn need(&self, length: u64, what: &dyn Fn() -> String) -> Result<()> {
        if length > self.remaining() {
            return Err(self.bad(format!(
                "{} at offset {} needs {length} bytes but the file ends after {} more",
                what(),
                self.position,
                self.remaining()
            )));
        }
        Ok(())
    }

    fn fill(&mut self, buffer: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
        self.need(buffer.len() as u64, what)?;
        self.reader
            .read_exact(buffer)
            .map_err(CliError::io(format!(
                "reading {} at offset {} of {}",
                what(),
                self.position,
                self.source.path().display()
            )))?;
        self.position += buffer.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut bytes = [0u8; N];
        self.fill(&mut bytes, what)?;
        Ok(bytes)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn skip(&mut self, length: u64, what: &dyn Fn() -> String) -> Result<()> {
        self.need(length, what)?;
        let copied = std::io::copy(&mut (&mut self.reader).take(length), &mut std::io::sink())
            .map_err(CliError::io(format!(
                "skipping {} at offset {} of {}",
                what(),
                self.position,
                self.source.path().display()
            )))?;
        if copied != length {
            return Err(self.bad(format!(
                "{} at offset {} is truncated",
                what(),
                self.position
            )));
        }
        self.position += length;
        Ok(())
    }

    /// A string whose length must not exceed `limit` (keys and names).
    fn name(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let start = self.position;
        let length = self.u64(what)?;
        self.need(length, &|| format!("{} (string of {length} bytes)", what()))?;
        if length > limits::MAX_NAME_LENGTH {
            return Err(self.bad(format!(
                "{} at offset {start}: string length {length} exceeds the limit of {}",
                what(),
                limits::MAX_NAME_LENGTH
            )));
        }
        let mut bytes = vec![0u8; length as usize];
        self.fill(&mut bytes, what)?;
        String::from_utf8(bytes).map_err(|error| {
            self.bad(format!(
                "{} at offset {start} is not valid UTF-8 (error at byte {})",
                what(),
                error.utf8_error().valid_up_to()
            ))
        })
    }

    /// A string value; `None` when it was longer than `limit` (and skipped).
    fn string_value(
        &mut self,
        limit: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Result<String, u64>> {
        let length = self.u64(what)?;
        self.need(length, &|| format!("{} (string of {length} bytes)", what()))?;
        if length > limit as u64 {
            self.skip(length, what)?;
            return Ok(Err(length));
        }
        let mut bytes = vec![0u8; length as usize];
        self.fill(&mut bytes, what)?;
        Ok(Ok(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// A scalar value as text (for JSON, `json` selects JSON spelling).
    fn scalar(&mut self, ty: u32, json: bool, what: &dyn Fn() -> String) -> Result<String> {
        fn float(value: f64, json: bool) -> String {
            if json && !value.is_finite() {
                "null".to_owned()
            } else {
                value.to_string()
            }
        }
        Ok(match ty {
            0 => self.array::<1>(what)?[0].to_string(),
            1 => i8::from_le_bytes(self.array(what)?).to_string(),
            2 => u16::from_le_bytes(self.array(what)?).to_string(),
            3 => i16::from_le_bytes(self.array(what)?).to_string(),
            4 => u32::from_le_bytes(self.array(what)?).to_string(),
            5 => i32::from_le_bytes(self.array(what)?).to_string(),
            6 => {
                let value = f32::from_le_bytes(self.array(what)?);
                if json && !value.is_finite() {
                    "null".to_owned()
                } else {
                    value.to_string()
                }
            }
            7 => (self.array::<1>(what)?[0] != 0).to_string(),
            10 => u64::from_le_bytes(self.array(what)?).to_string(),
            11 => i64::from_le_bytes(self.array(what)?).to_string(),
            12 => float(f64::from_le_bytes(self.array(what)?), json),
            other => {
                return Err(self.bad(format!(
                    "{} at offset {}: unknown value type {other}",
                    what(),
                    self.position
                )));
            }
        })
    }

    /// A whole value as metadata text.
    fn value(&mut self, ty: u32, what: &dyn Fn() -> String) -> Result<String> {
        let budget = TOTAL_METADATA_LIMIT
            .saturating_sub(self.metadata_bytes)
            .min(VALUE_LIMIT);
        let text = match ty {
            8 => match self.string_value(budget, what)? {
                Ok(text) => text,
                Err(length) => format!(r#"{{"omitted":"string","length":{length}}}"#),
            },
            9 => {
                let mut out = String::new();
                let mut omitted = None;
                self.array_json(0, budget, &mut out, &mut omitted, what)?;
                match omitted {
                    Some((element_type, count)) => format!(
                        r#"{{"omitted":"array","element_type":"{element_type}","count":{count}}}"#
                    ),
                    None => out,
                }
            }
            _ => self.scalar(ty, false, what)?,
        };
        self.metadata_bytes += text.len();
        Ok(text)
    }

    /// Appends an array's JSON to `out` while it stays within `budget` bytes;
    /// past that, keeps parsing (to move past it) and records the outermost
    /// array's element type and count in `omitted`.
    fn array_json(
        &mut self,
        depth: u32,
        budget: usize,
        out: &mut String,
        omitted: &mut Option<(&'static str, u64)>,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.bad(format!(
                "{} at offset {}: arrays nested deeper than {MAX_ARRAY_DEPTH}",
                what(),
                self.position
            )));
        }
        let start = self.position;
        let element_type = self.u32(what)?;
        let count = self.u64(what)?;
        let element_size = min_value_size(element_type).ok_or_else(|| {
            self.bad(format!(
                "{} at offset {start}: unknown array element type {element_type}",
                what()
            ))
        })?;
        if count
            .checked_mul(element_size)
            .is_none_or(|needed| needed > self.remaining())
        {
            return Err(self.bad(format!(
                "{} at offset {start}: array of {count} {} values cannot fit in the {} bytes left in the file",
                what(),
                TYPE_NAMES[element_type as usize],
                self.remaining()
            )));
        }
        let outermost = (TYPE_NAMES[element_type as usize], count);
        let mut overflow = false;
        out.push('[');
        for index in 0..count {
            if !overflow && index > 0 {
                out.push(',');
            }
            match element_type {
                8 => match self.string_value(VALUE_LIMIT, what)? {
                    Ok(text) if !overflow => {
                        let encoded = serde_json::Value::String(text).to_string();
                        out.push_str(&encoded);
                    }
                    Ok(_) => {}
                    Err(_) => overflow = true,
                },
                9 => {
                    if overflow {
                        let mut scratch = String::new();
                        let mut ignored = None;
                        self.array_json(depth + 1, 0, &mut scratch, &mut ignored, what)?;
                    } else {
                        let mut inner_omitted = None;
                        self.array_json(depth + 1, budget, out, &mut inner_omitted, what)?;
                        overflow |= inner_omitted.is_some();
                    }
                }
                _ => {
                    let text = self.scalar(element_type, true, what)?;
                    if !overflow {
                        out.push_str(&text);
                    }
                }
            }
            if out.len() > budget {
                overflow = true;
                out.clear();
            }
        }
        if overflow {
            out.clear();
            *omitted = Some(outermost);
        } else {
            out.push(']');
            if out.len() > budget {
                out.clear();
                *omitted = Some(outermost);
            }
        }
        Ok(())
    }
}

fn align_up(value: u64, alignment: u64) -> Option<u64> {
    value.checked_next_multiple_of(alignment)
}

/// Parses the header, metadata and tensor infos of a GGUF file.
pub fn read_file(source: &SourceFile, file_index: usize) -> Result<GgufFile> {
    let bad = |message: String| CliError::bad_input(source.path(), format!("GGUF: {message}"));
    let reader = source.reader_at(0, source.len(), "the GGUF file")?;
    let mut cursor = Cursor {
        reader: BufReader::with_capacity(1 << 16, reader),
        position: 0,
        file_length: source.len(),
        source,
        metadata_bytes: 0,
    };
    let magic: [u8; 4] = cursor.array(&|| "magic".to_owned())?;
    if magic != MAGIC {
        return Err(bad(format!("bad magic {magic:02x?} (expected \"GGUF\")")));
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
        return Err(bad(format!(
            "unsupported version {version} at offset 4{hint}; supported: 2, 3"
        )));
    }
    let tensor_count = cursor.u64(&|| "tensor count".to_owned())?;
    let kv_count = cursor.u64(&|| "metadata key/value count".to_owned())?;
    let left = cursor.remaining();
    // A tensor info takes at least 24 bytes, a key/value pair at least 13.
    if tensor_count.checked_mul(24).is_none_or(|n| n > left) {
        return Err(bad(format!(
            "tensor count {tensor_count} (offset 8) is absurd: the file has {left} bytes left"
        )));
    }
    if kv_count.checked_mul(13).is_none_or(|n| n > left) {
        return Err(bad(format!(
            "metadata key/value count {kv_count} (offset 16) is absurd: the file has {left} bytes left"
        )));
    }
    let mut metadata = Vec::new();
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for kv_index in 0..kv_count {
        let key_offset = cursor.position;
        let key = cursor.name(&|| format!("metadata key {kv_index}"))?;
        let ty = cursor.u32(&|| format!("type of metadata key {key:?}"))?;
        if min_value_size(ty).is_none() {
            return Err(bad(format!(
                "metadata key {key:?} (offset {key_offset}): unknown value type {ty}"
            )));
        }
        let value = cursor.value(ty, &|| format!("value of metadata key {key:?}"))?;
        if key == "general.alignment" {
            alignment = match (ty, value.parse::<u64>()) {
                (0 | 2 | 4 | 10, Ok(value))
                    if value.is_power_of_two() && value <= limits::MAX_ALIGNMENT =>
                {
                    value
                }
                _ => {
                    return Err(bad(format!(
                        "general.alignment (offset {key_offset}) must be an unsigned power of two up to 1 GiB, found {value} of type {}",
                        TYPE_NAMES[ty as usize]
                    )));
                }
            };
        }
        if !keys.insert(key.clone()) {
            return Err(bad(format!(
                "duplicate metadata key {key:?} at offset {key_offset}"
            )));
        }
        metadata.push((key, value));
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
            return Err(bad(format!(
                "{} at offset {info_offset}: {n_dims} dimensions (at most {MAX_DIMS} supported)",
                what()
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(cursor.u64(&what)?);
        }
        let ggml_type = cursor.u32(&what)?;
        let offset = cursor.u64(&what)?;
        if !names.insert(name.clone()) {
            return Err(bad(format!(
                "{} at offset {info_offset}: duplicate tensor name",
                what()
            )));
        }
        infos.push(Info {
            name,
            dims,
            ggml_type,
            offset,
            info_offset,
        });
    }
    let data_start = align_up(cursor.position, alignment).unwrap_or(u64::MAX);
    if !infos.is_empty() && data_start > source.len() {
        return Err(bad(format!(
            "tensor data would start at offset {data_start}, past the end of the file ({} bytes)",
            source.len()
        )));
    }
    let data_length = source.len().saturating_sub(data_start);
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
            return Err(bad(format!(
                "{}: data offset {} is past the end of the data area ({data_length} bytes starting at {data_start})",
                what(),
                info.offset
            )));
        }
        let elements = info
            .dims
            .iter()
            .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)))
            .ok_or_else(|| bad(format!("{}: element count overflows", what())))?;
        let size = match ggml_block(info.ggml_type) {
            Some((block_elements, block_bytes)) => {
                let row = info.dims.first().copied().unwrap_or(1);
                if row % block_elements != 0 {
                    return Err(bad(format!(
                        "{}: row length {row} is not a multiple of the {block_elements}-element block of GGML type {}",
                        what(),
                        info.ggml_type
                    )));
                }
                // Saturating: a shape whose element count nearly fills u128 overflows
                // here (found by the `gguf` fuzz target); such a size is never
                // in bounds, so it becomes u64::MAX and fails the range check.
                let bytes =
                    (elements / u128::from(block_elements)).saturating_mul(u128::from(block_bytes));
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
            return Err(bad(format!(
                "{}: data {}..+{size} runs past the end of the data area ({data_length} bytes starting at {data_start})",
                what(),
                info.offset
            )));
        }
        sizes[index] = size;
    }
    for pair in by_offset.windows(2) {
        let (first, second) = (&infos[pair[0]], &infos[pair[1]]);
        let first_end = first.offset + sizes[pair[0]];
        if second.offset < first_end && sizes[pair[1]] > 0 {
            return Err(bad(format!(
                "tensors {:?} (data {}..{first_end}) and {:?} (data from {}) overlap",
                first.name, first.offset, second.name, second.offset
            )));
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
            SourceTensor {
                name: info.name,
                dtype,
                source_type,
                shape: info.dims.into_iter().rev().collect(),
                file: file_index,
                offset: data_start + info.offset,
                length: size,
            }
        })
        .collect();
    Ok(GgufFile {
        version,
        tensors,
        metadata,
    })
}

/// Adds a GGUF file's metadata to `list` (after the converter's own `source.*` keys).
pub fn add_metadata(file: &GgufFile, list: &mut MetadataList) {
    for (key, value) in &file.metadata {
        list.insert(key.clone(), value.clone());
    }
}
