//! The safetensors header, parsed from the first bytes of a file, and the
//! `model.safetensors.index.json` of a sharded set. No I/O: the caller reads.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, …, "__metadata__": {…}}`),
//! then the data area, to which `data_offsets` are relative.
//!
//! Reading one: pass the first 8 (or more) bytes to [`header_bytes_needed`], read
//! that many bytes from the start of the file, and pass them with the file length
//! to [`SafetensorsHeader::parse`]. Its checks are those `tmai convert` applies:
//! a JSON object with no duplicate key, a known dtype, at most
//! [`limits::MAX_RANK`] dimensions, `data_offsets` in
//! order, inside the data area and of the size dtype and shape imply, no two
//! tensors overlapping. Tensors come out in data-offset order.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path};

use serde::Deserialize;
use serde::de::{Error as _, MapAccess, Visitor};

use crate::error::SourceError;
use crate::foreign::{ForeignTensor, TensorTable, element_count};
use crate::{DType, limits};

mod scan;

/// `format` of this module's errors.
const FORMAT: &str = "safetensors";
/// `format` of the index's errors.
const INDEX_FORMAT: &str = "safetensors index";

/// The largest JSON header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_LENGTH: u64 = 100_000_000;

/// The largest index JSON accepted.
pub const MAX_INDEX_LENGTH: u64 = 64 << 20;

/// The name of the index file of a sharded safetensors set.
pub const INDEX_FILE_NAME: &str = "model.safetensors.index.json";

/// The safetensors dtype names understood, and their dtype.
pub const DTYPES: &[(&str, DType)] = &[
    ("F64", DType::F64),
    ("F32", DType::F32),
    ("F16", DType::F16),
    ("BF16", DType::BF16),
    ("I64", DType::I64),
    ("I32", DType::I32),
    ("I16", DType::I16),
    ("I8", DType::I8),
    ("U64", DType::U64),
    ("U32", DType::U32),
    ("U16", DType::U16),
    ("U8", DType::U8),
    ("BOOL", DType::Bool),
    ("F8_E4M3", DType::F8E4M3),
    ("F8_E5M2", DType::F8E5M2),
];

/// The dtype of a safetensors dtype name, if understood.
pub fn dtype_of(name: &str) -> Option<DType> {
    // A match, not a search of DTYPES: one length test, then few comparisons.
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U64" => DType::U64,
        "U32" => DType::U32,
        "U16" => DType::U16,
        "U8" => DType::U8,
        "BOOL" => DType::Bool,
        "F8_E4M3" => DType::F8E4M3,
        "F8_E5M2" => DType::F8E5M2,
        _ => return None,
    })
}

/// A JSON value as a metadata string: strings as they are, anything else JSON-encoded.
pub fn value_to_string(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A JSON object's entries in document order; duplicate keys are an error.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(A::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[derive(Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

fn malformed(what: impl Into<String>, offset: u64, problem: impl Into<String>) -> SourceError {
    SourceError::MalformedSourceHeader {
        format: FORMAT,
        what: what.into(),
        offset,
        problem: problem.into(),
    }
}

/// How many bytes from the start of a safetensors file [`SafetensorsHeader::parse`]
/// needs (`8 + N`), read from its first 8 bytes; checks `N` against the file
/// length and [`MAX_HEADER_LENGTH`].
pub fn header_bytes_needed(first_bytes: &[u8], file_length: u64) -> Result<u64, SourceError> {
    if file_length < 8 {
        return Err(malformed(
            "header length",
            0,
            format!("the file has {file_length} bytes, fewer than the 8 of the header length"),
        ));
    }
    let Some(length_bytes) = first_bytes.get(..8) else {
        return Err(SourceError::NeedMoreBytes {
            format: FORMAT,
            what: "the header length".to_owned(),
            needed: 8,
            available: first_bytes.len() as u64,
        });
    };
    let mut length = [0u8; 8];
    length.copy_from_slice(length_bytes);
    let header_length = u64::from_le_bytes(length);
    if header_length > file_length - 8 {
        return Err(malformed(
            "header length",
            0,
            format!("{header_length} runs past the end of the file ({file_length} bytes)"),
        ));
    }
    if header_length > MAX_HEADER_LENGTH {
        return Err(malformed(
            "header length",
            0,
            format!("{header_length} exceeds the limit of {MAX_HEADER_LENGTH} bytes"),
        ));
    }
    Ok(8 + header_length)
}

/// A validated safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Absolute offset of the data area (`8 + N`).
    pub data_start: u64,
    /// The file length the header was checked against.
    pub file_length: u64,
    /// Tensors (absolute ranges, `file` 0), in data-offset order.
    pub tensors: Vec<ForeignTensor>,
    /// `__metadata__` entries sorted by key (non-string values JSON-encoded), as `tmai convert` reads them.
    pub metadata: Vec<(String, String)>,
}

impl SafetensorsHeader {
    /// Parses and validates the header from `head`, the first bytes of a file of
    /// `file_length` bytes; `head` must hold at least [`header_bytes_needed`] bytes
    /// (more are ignored), else the error is [`SourceError::NeedMoreBytes`].
    pub fn parse(head: &[u8], file_length: u64) -> Result<SafetensorsHeader, SourceError> {
        Self::parse_shard(head, file_length, 0)
    }

    /// [`SafetensorsHeader::parse`] for shard `file` of a set (stored in each tensor's `file`).
    pub fn parse_shard(
        head: &[u8],
        file_length: u64,
        file: usize,
    ) -> Result<SafetensorsHeader, SourceError> {
        Self::parse_shard_with(head, file_length, file, true)
    }

    /// [`SafetensorsHeader::parse_shard`], trying the fast scanner first if `fast`
    /// (`false` reads every header with serde_json: the reference in tests).
    fn parse_shard_with(
        head: &[u8],
        file_length: u64,
        file: usize,
        fast: bool,
    ) -> Result<SafetensorsHeader, SourceError> {
        let header = parse_table(head, file_length, file, fast)?;
        let table = &header.table;
        Ok(SafetensorsHeader {
            data_start: header.data_start,
            file_length: header.file_length,
            tensors: table
                .entries
                .iter()
                .map(|tensor| table.to_foreign(tensor))
                .collect(),
            metadata: header.metadata,
        })
    }
}

/// A validated safetensors header with its tensors in a [`TensorTable`]: what
/// [`SafetensorsHeader`] holds, without an allocation per tensor.
#[derive(Clone, Debug)]
pub(crate) struct TableHeader {
    /// Absolute offset of the data area (`8 + N`).
    pub(crate) data_start: u64,
    /// The file length the header was checked against.
    pub(crate) file_length: u64,
    /// Tensors (absolute ranges), in data-offset order.
    pub(crate) table: TensorTable,
    /// `__metadata__` entries sorted by key.
    pub(crate) metadata: Vec<(String, String)>,
}

/// [`SafetensorsHeader::parse_shard`] into a [`TableHeader`], trying the fast
/// scanner first if `fast`; the same checks and errors.
pub(crate) fn parse_table(
    head: &[u8],
    file_length: u64,
    file: usize,
    fast: bool,
) -> Result<TableHeader, SourceError> {
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
    let data_start = header_bytes_needed(head, file_length)?;
    let Some(json) = usize::try_from(data_start)
        .ok()
        .and_then(|end| head.get(8..end))
    else {
        return Err(SourceError::NeedMoreBytes {
            format: FORMAT,
            what: "the JSON header".to_owned(),
            needed: data_start,
            available: head.len() as u64,
        });
    };
    let fast = if fast {
        scan_entries(json, data_start, file_length, file)
    } else {
        None
    };
    let (mut table, metadata, laid_out) = match fast {
        Some(read) => read,
        None => {
            let (tensors, metadata) =
                parse_entries_with_serde(json, data_start, file_length, file)?;
            (TensorTable::of(&tensors), metadata, false)
        }
    };
    if laid_out {
        // In data order with no overlap, as the scan found: what the sort
        // and the check below would find.
        return Ok(TableHeader {
            data_start,
            file_length,
            table,
            metadata,
        });
    }
    // Writers commonly list tensors in data order: then no sort (nor its
    // scratch buffer) is needed.
    if !table
        .entries
        .is_sorted_by_key(|tensor| (tensor.start, tensor.end))
    {
        table
            .entries
            .sort_by_key(|tensor| (tensor.start, tensor.end));
    }
    for pair in table.entries.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(SourceError::SourceTensorsOverlap {
                format: FORMAT,
                first: table.name(&pair[0]).to_owned(),
                first_start: pair[0].start,
                first_end: pair[0].end,
                second: table.name(&pair[1]).to_owned(),
                second_start: pair[1].start,
            });
        }
    }
    Ok(TableHeader {
        data_start,
        file_length,
        table,
        metadata,
    })
}

/// A header's tensors in document order and its metadata sorted by key.
type ReadHeader = (Vec<ForeignTensor>, Vec<(String, String)>);

/// What [`scan_entries`] reads: the tensors (document order), the sorted
/// metadata, and whether the tensors are laid out in data order without overlap.
type ScannedHeader = (TensorTable, Vec<(String, String)>, bool);

/// The tensors (document order) and sorted metadata of a header, read with
/// [`scan::scan`] when the header has the plain shape it reads and every tensor
/// passes [`check`]; [`None`] leaves the header, and the reporting of any
/// error, to [`parse_entries_with_serde`]. The flag says whether each tensor
/// begins at or after the end of the one before (then they are in data
/// order and none overlaps).
fn scan_entries(
    json: &[u8],
    data_start: u64,
    file_length: u64,
    file: usize,
) -> Option<ScannedHeader> {
    // Real entries take some 80 to 150 bytes, a third of it the name: room for
    // most headers' entries without regrowth (a Vec that grows past 1 KiB
    // costs more than the slack), about the header's own size in all.
    let mut table = TensorTable::with_capacity(json.len() / 64, json.len() / 2);
    let data_length = file_length - data_start;
    // Whether the names so far are in increasing order (then none repeats).
    let mut previous: Option<&str> = None;
    let mut increasing = true;
    // Where the last tensor ends, and whether each began at or after the end
    // of the one before.
    let mut last_end = 0;
    let mut laid_out = true;
    let metadata = scan::scan(json, |entry| {
        let shape = entry.shape;
        let dtype = check(entry.dtype, shape, entry.begin, entry.end, data_length).ok()?;
        if let Some(previous) = previous {
            increasing &= precedes(previous.as_bytes(), entry.name.as_bytes());
        }
        previous = Some(entry.name);
        laid_out &= entry.begin >= last_end;
        last_end = entry.end;
        table.push(
            entry.name,
            dtype,
            0,
            shape,
            file,
            data_start + entry.begin,
            data_start + entry.end,
        );
        Some(())
    })?;
    if !increasing && has_duplicate_names(&table) {
        return None;
    }
    let metadata = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    Some((table, metadata, laid_out))
}

/// Whether `a` sorts strictly before `b` (byte order, as `<` on `str`);
/// eight bytes at a time, without a call (names are short, and neighbours
/// share long prefixes).
fn precedes(a: &[u8], b: &[u8]) -> bool {
    let word = |bytes: &[u8], at: usize| {
        let mut word = [0u8; 8];
        if let Some(chunk) = bytes.get(at..at + 8) {
            word.copy_from_slice(chunk);
        }
        u64::from_be_bytes(word)
    };
    let common = a.len().min(b.len());
    let mut at = 0;
    while at + 8 <= common {
        let (x, y) = (word(a, at), word(b, at));
        if x != y {
            return x < y;
        }
        at += 8;
    }
    a.get(at..) < b.get(at..)
}

/// Whether two tensors share a name. Writers commonly list names in increasing
/// order (the safetensors crate writes them by dtype, then name), which proves
/// there is none without hashing: [`scan_entries`] checks that order as it
/// goes, and calls this only when it does not hold.
fn has_duplicate_names(table: &TensorTable) -> bool {
    let tensors = &table.entries;
    let mut seen = HashSet::with_capacity(tensors.len());
    !tensors.iter().all(|tensor| seen.insert(table.name(tensor)))
}

/// The tensors (document order) and sorted metadata of a header, read with
/// serde_json: the path for every header [`scan::scan`] does not take (escapes,
/// non-string metadata values, odd numbers, invalid JSON), and the reference
/// the fast path is tested against.
fn parse_entries_with_serde(
    json: &[u8],
    data_start: u64,
    file_length: u64,
    file: usize,
) -> Result<ReadHeader, SourceError> {
    let entries: Entries = serde_json::from_slice(json).map_err(|error| {
        malformed(
            format!("JSON header (bytes 8..{data_start})"),
            8 + error_offset(json, &error),
            error.to_string(),
        )
    })?;
    let mut tensors = Vec::new();
    let mut metadata = Vec::new();
    for (name, value) in entries.0 {
        if name == "__metadata__" {
            let serde_json::Value::Object(map) = value else {
                return Err(malformed(
                    "JSON header",
                    8,
                    "__metadata__ is not a JSON object",
                ));
            };
            metadata.extend(map.iter().map(|(k, v)| (k.clone(), value_to_string(v))));
            continue;
        }
        let info: RawInfo = serde_json::from_value(value)
            .map_err(|error| malformed(format!("tensor {name:?}"), 8, error.to_string()))?;
        tensors.push(check_tensor(
            name,
            info.dtype,
            info.shape,
            info.data_offsets,
            data_start,
            file_length,
            file,
        )?);
    }
    Ok((tensors, metadata))
}

/// What [`check`] found wrong with a tensor entry.
enum Flaw {
    UnknownDType,
    Rank,
    Reversed,
    OutOfBounds,
    /// The size dtype and shape imply (`u128::MAX` if none).
    Size(u128),
}

/// The checks of one tensor entry, shared by both paths: a known dtype, at most
/// [`limits::MAX_RANK`] dimensions, `data_offsets` in order, inside a data area
/// of `data_length` bytes and of the size dtype and shape imply. Gives the dtype.
#[inline]
fn check(
    dtype_name: &str,
    shape: &[u64],
    begin: u64,
    end: u64,
    data_length: u64,
) -> Result<DType, Flaw> {
    let dtype = dtype_of(dtype_name).ok_or(Flaw::UnknownDType)?;
    if shape.len() > limits::MAX_RANK {
        return Err(Flaw::Rank);
    }
    if begin > end {
        return Err(Flaw::Reversed);
    }
    if end > data_length {
        return Err(Flaw::OutOfBounds);
    }
    let bits = dtype.bits().unwrap_or(8);
    // In 64 bits while the product fits (it nearly always does), else in 128.
    let expected = match shape
        .iter()
        .try_fold(u64::from(bits), |product, &dimension| {
            product.checked_mul(dimension)
        }) {
        Some(bits) => u128::from(bits.div_ceil(8)),
        None => element_count(shape)
            .and_then(|count| count.checked_mul(u128::from(bits)))
            .map_or(u128::MAX, |bits| bits.div_ceil(8)),
    };
    if expected != u128::from(end - begin) {
        return Err(Flaw::Size(expected));
    }
    Ok(dtype)
}

/// [`check`]s one tensor entry and makes it a [`ForeignTensor`] with absolute
/// offsets (the data area is `data_start..file_length`), or the error.
fn check_tensor(
    name: String,
    dtype_name: String,
    shape: Vec<u64>,
    (begin, end): (u64, u64),
    data_start: u64,
    file_length: u64,
    file: usize,
) -> Result<ForeignTensor, SourceError> {
    let what = || format!("tensor {name:?}");
    match check(&dtype_name, &shape, begin, end, file_length - data_start) {
        Ok(dtype) => Ok(ForeignTensor {
            name,
            dtype,
            source_type: 0,
            shape,
            file,
            start: data_start + begin,
            end: data_start + end,
        }),
        Err(Flaw::UnknownDType) => Err(SourceError::UnsupportedSourceDType {
            format: FORMAT,
            tensor: name,
            dtype: dtype_name,
        }),
        Err(Flaw::Rank) => Err(malformed(
            what(),
            8,
            format!("rank {} exceeds {}", shape.len(), limits::MAX_RANK),
        )),
        Err(Flaw::Reversed) => Err(malformed(
            what(),
            8,
            format!("data_offsets [{begin}, {end}] are reversed"),
        )),
        Err(Flaw::OutOfBounds) => Err(SourceError::SourceTensorOutOfBounds {
            format: FORMAT,
            tensor: name,
            start: data_start.saturating_add(begin),
            end: data_start.saturating_add(end),
            data_start,
            data_end: file_length,
        }),
        Err(Flaw::Size(expected)) => Err(SourceError::SourceTensorSizeMismatch {
            format: FORMAT,
            tensor: name,
            dtype: dtype_name,
            shape,
            expected,
            actual: end - begin,
        }),
    }
}

/// Byte offset of a serde_json error inside `json` (its line and column are 1-based).
fn error_offset(json: &[u8], error: &serde_json::Error) -> u64 {
    let line = error.line();
    if line == 0 {
        return 0;
    }
    let line_start = if line == 1 {
        0
    } else {
        json.iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .nth(line - 2)
            .map_or(json.len(), |(index, _)| index + 1)
    };
    (line_start + error.column().saturating_sub(1)).min(json.len()) as u64
}

/// A parsed `model.safetensors.index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardIndex {
    /// Shard file names (plain relative paths), sorted and without duplicates: the
    /// shard index of a tensor is a position in this list.
    pub shards: Vec<String>,
    /// `weight_map`: each tensor name and the index of its shard in [`ShardIndex::shards`], sorted by tensor name.
    pub weight_map: Vec<(String, usize)>,
    /// The index's `metadata` object, sorted by key (non-string values JSON-encoded).
    pub metadata: Vec<(String, String)>,
}

impl ShardIndex {
    /// Parses an index JSON (at most [`MAX_INDEX_LENGTH`] bytes).
    pub fn parse(json: &[u8]) -> Result<ShardIndex, SourceError> {
        let bad = |what: &str, problem: String| SourceError::MalformedSourceHeader {
            format: INDEX_FORMAT,
            what: what.to_owned(),
            offset: 0,
            problem,
        };
        if json.len() as u64 > MAX_INDEX_LENGTH {
            return Err(bad(
                "index JSON",
                format!(
                    "{} bytes exceed the limit of {MAX_INDEX_LENGTH} bytes",
                    json.len()
                ),
            ));
        }
        let entries: Entries =
            serde_json::from_slice(json).map_err(|error| SourceError::MalformedSourceHeader {
                format: INDEX_FORMAT,
                what: "index JSON".to_owned(),
                offset: error_offset(json, &error),
                problem: error.to_string(),
            })?;
        let mut metadata = Vec::new();
        let mut pairs: Option<Vec<(String, String)>> = None;
        for (key, value) in entries.0 {
            match (key.as_str(), value) {
                ("metadata", serde_json::Value::Object(map)) => {
                    metadata.extend(map.iter().map(|(k, v)| (k.clone(), value_to_string(v))));
                }
                ("weight_map", serde_json::Value::Object(map)) => {
                    let mut found = Vec::with_capacity(map.len());
                    for (tensor, shard) in map {
                        let serde_json::Value::String(shard) = shard else {
                            return Err(bad(
                                "weight_map",
                                format!("entry for tensor {tensor:?} is not a file name"),
                            ));
                        };
                        found.push((tensor, shard));
                    }
                    pairs = Some(found);
                }
                ("metadata" | "weight_map", _) => {
                    return Err(bad("index JSON", format!("{key:?} is not a JSON object")));
                }
                _ => {}
            }
        }
        let pairs =
            pairs.ok_or_else(|| bad("index JSON", "has no \"weight_map\" object".to_owned()))?;
        let mut shards: Vec<String> = pairs.iter().map(|(_, shard)| shard.clone()).collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in &shards {
            if Path::new(shard)
                .components()
                .any(|component| !matches!(component, Component::Normal(_)))
            {
                return Err(bad(
                    "weight_map",
                    format!(
                        "shard {shard:?} is not a plain relative path inside the index directory"
                    ),
                ));
            }
        }
        let weight_map = pairs
            .into_iter()
            .map(|(tensor, shard)| {
                let index = shards.binary_search(&shard).unwrap_or_default();
                (tensor, index)
            })
            .collect();
        Ok(ShardIndex {
            shards,
            weight_map,
            metadata,
        })
    }
}

impl ShardIndex {
    /// Checks the parsed headers of the shards (`headers[i]` is the header of
    /// `shards[i]`) against the index: no tensor in two shards, and every tensor
    /// of `weight_map` in the shard it names. (Tensors a shard holds that the
    /// index does not list are accepted, as `tmai convert` accepts them.)
    pub fn check_shards(&self, headers: &[SafetensorsHeader]) -> Result<(), SourceError> {
        let bad = |tensor: &str, problem: String| SourceError::MalformedSourceHeader {
            format: INDEX_FORMAT,
            what: format!("tensor {tensor:?}"),
            offset: 0,
            problem,
        };
        if headers.len() != self.shards.len() {
            return Err(SourceError::MalformedSourceHeader {
                format: INDEX_FORMAT,
                what: "shards".to_owned(),
                offset: 0,
                problem: format!(
                    "{} shard headers given for an index naming {} shards",
                    headers.len(),
                    self.shards.len()
                ),
            });
        }
        let mut location: HashMap<&str, usize> = HashMap::new();
        for (shard, header) in headers.iter().enumerate() {
            for tensor in &header.tensors {
                if let Some(&first) = location.get(tensor.name.as_str()) {
                    return Err(bad(
                        &tensor.name,
                        format!(
                            "appears in two shards: {:?} and {:?}",
                            self.shards[first], self.shards[shard]
                        ),
                    ));
                }
                location.insert(&tensor.name, shard);
            }
        }
        for (tensor, expected) in &self.weight_map {
            let shard = &self.shards[*expected];
            match location.get(tensor.as_str()) {
                Some(&found) if found == *expected => {}
                Some(&found) => {
                    return Err(bad(
                        tensor,
                        format!(
                            "index maps it to {shard:?} but it is in {:?}",
                            self.shards[found]
                        ),
                    ));
                }
                None => {
                    return Err(bad(
                        tensor,
                        format!("index maps it to {shard:?}, which does not contain it"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data: usize) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        bytes
    }

    #[test]
    fn parses_tensors_in_offset_order_with_absolute_ranges() -> Result<(), SourceError> {
        let json = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"__metadata__":{"format":"pt","n":1}}"#;
        let bytes = file(json, 12);
        let length = bytes.len() as u64;
        assert_eq!(
            header_bytes_needed(&bytes[..8], length)?,
            8 + json.len() as u64
        );
        let header = SafetensorsHeader::parse(&bytes, length)?;
        let data_start = 8 + json.len() as u64;
        assert_eq!(header.data_start, data_start);
        let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(header.tensors[1].start, data_start + 4);
        assert_eq!(header.tensors[1].end, data_start + 12);
        assert_eq!(header.tensors[1].dtype, DType::F32);
        assert_eq!(
            header.metadata,
            [("format".into(), "pt".into()), ("n".into(), "1".into())]
        );
        Ok(())
    }

    #[test]
    fn a_short_head_asks_for_the_bytes_it_needs() {
        let json = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        let bytes = file(json, 1);
        let needed = 8 + json.len() as u64;
        for cut in [0, 5, 8, 20] {
            match SafetensorsHeader::parse(&bytes[..cut], bytes.len() as u64) {
                Err(SourceError::NeedMoreBytes {
                    needed: asked,
                    available,
                    ..
                }) => {
                    assert_eq!(available, cut as u64);
                    assert_eq!(asked, if cut < 8 { 8 } else { needed });
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_headers_have_typed_errors() {
        type Check = fn(&SourceError) -> bool;
        let cases: &[(&str, usize, Check)] = &[
            (
                r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
                1,
                |e| matches!(e, SourceError::UnsupportedSourceDType { .. }),
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,2]}}"#,
                4,
                |e| matches!(e, SourceError::SourceTensorSizeMismatch { .. }),
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[9],"data_offsets":[0,9]}}"#,
                4,
                |e| matches!(e, SourceError::SourceTensorOutOfBounds { .. }),
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                4,
                |e| matches!(e, SourceError::SourceTensorsOverlap { .. }),
            ),
            (r#"{"a":1,"a":2}"#, 0, |e| {
                matches!(e, SourceError::MalformedSourceHeader { .. })
            }),
            (
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}}"#,
                1,
                |e| matches!(e, SourceError::MalformedSourceHeader { .. }),
            ),
            (r#"{"__metadata__":[]}"#, 0, |e| {
                matches!(e, SourceError::MalformedSourceHeader { .. })
            }),
        ];
        for (json, data, check) in cases {
            let bytes = file(json, *data);
            match SafetensorsHeader::parse(&bytes, bytes.len() as u64) {
                Err(error) => assert!(check(&error), "{json}: {error}"),
                Ok(header) => panic!("{json}: accepted {header:?}"),
            }
        }
        let mut bytes = file("{}", 0);
        bytes[0] = 200;
        assert!(matches!(
            header_bytes_needed(&bytes, bytes.len() as u64),
            Err(SourceError::MalformedSourceHeader { offset: 0, .. })
        ));
    }

    /// `json` in a file with `data` bytes of data, parsed both ways.
    fn both_ways(json: &[u8], data: usize) -> (String, String) {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json);
        bytes.resize(bytes.len() + data, 0);
        let length = bytes.len() as u64;
        let fast = SafetensorsHeader::parse_shard_with(&bytes, length, 3, true);
        let serde = SafetensorsHeader::parse_shard_with(&bytes, length, 3, false);
        check_direct_model(&bytes);
        (format!("{fast:?}"), format!("{serde:?}"))
    }

    /// A model's layers (name, offset, length, tensors) and metadata, as text.
    fn model_text(model: &crate::ForeignModel) -> String {
        let view = model.model();
        let mut text = String::new();
        for (index, layer) in view.layers().enumerate() {
            text.push_str(&format!(
                "{:?} {} {}:",
                layer.name, layer.offset, layer.length
            ));
            for tensor in view.layer_tensors(index as u64).into_iter().flatten() {
                text.push_str(&format!(" {tensor:?}"));
            }
            text.push('\n');
        }
        text.push_str(&format!("{:?}", view.metadata().collect::<Vec<_>>()));
        text
    }

    /// [`crate::ForeignModel::parse_safetensors`] (the scanner, a tensor table)
    /// gives what the serde_json parse and [`crate::ForeignModel::from_safetensors`]
    /// give, and its layers cover what [`crate::group_layers`]'s spans cover.
    fn check_direct_model(bytes: &[u8]) {
        use crate::{ForeignModel, FormatError, Grouping, group_layers};
        let length = bytes.len() as u64;
        let direct = ForeignModel::parse_safetensors(bytes, length, &Grouping::Default);
        let reference = SafetensorsHeader::parse_shard_with(bytes, length, 0, false);
        let layers = reference
            .as_ref()
            .map(|header| group_layers(&header.tensors, &Grouping::Default))
            .unwrap_or_default();
        let reference = reference
            .map_err(FormatError::from)
            .and_then(|header| ForeignModel::from_safetensors(header, &Grouping::Default));
        match (&direct, &reference) {
            (Ok(direct), Ok(reference)) => {
                assert_eq!(model_text(direct), model_text(reference));
                let view = direct.model();
                assert_eq!(view.layer_count(), layers.len() as u64);
                for (index, layer) in layers.iter().enumerate() {
                    let info = view.layer(index as u64);
                    assert!(info.is_ok(), "layer {index}: {info:?}");
                    let Ok(info) = info else { return };
                    let (first, last) = (layer.spans[0], layer.spans[layer.spans.len() - 1]);
                    assert_eq!(info.name, Some(layer.name.as_str()));
                    assert_eq!(
                        (info.offset, info.offset + info.length),
                        (first.start, last.end)
                    );
                    assert_eq!(
                        info.tensors.end - info.tensors.start,
                        layer.tensors.len() as u64
                    );
                }
            }
            _ => assert_eq!(format!("{direct:?}"), format!("{reference:?}")),
        }
    }

    /// Whether the scanner reads `json` (with `data` bytes of data) itself.
    fn scanned(json: &str, data: u64) -> bool {
        let data_start = 8 + json.len() as u64;
        scan_entries(json.as_bytes(), data_start, data_start + data, 0).is_some()
    }

    /// Headers of many spellings: plain, spaced, escaped, odd metadata values.
    fn sample_headers() -> Vec<String> {
        let mut headers = vec![
            r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"__metadata__":{"format":"pt","n":"1"}}"#.to_owned(),
            "{ \"__metadata__\" : { \"z\" : \"1\" , \"a\" : \"\" } ,\n\t\"w\" :\r\n{ \"shape\" : [ 2 , 3 ] , \"data_offsets\" : [ 0 , 12 ] , \"dtype\" : \"F16\" } , \"e\" : {\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[12,13]} } \n".to_owned(),
            r#"{"a\"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"\u00e9\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#.to_owned(),
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"__metadata__":{"n":1,"f":1.5e3,"o":{"y":[1,null,true],"x":"\n"},"s":"\u00e9"}}"#.to_owned(),
            r#"{"x":{"dtype":"I8","shape":[1,1,1,1,1,1,1,1],"data_offsets":[0,1]},"y":{"dtype":"BF16","shape":[0,7],"data_offsets":[1,1]},"z":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[1,4]}}"#.to_owned(),
            r#"{"é":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":{"k":[1,2]}}}"#.to_owned(),
            "{}".to_owned(),
            r#"{"__metadata__":{}}"#.to_owned(),
        ];
        // Many tensors, not in name order, over several layers.
        let mut many = String::from("{");
        for index in 0..40u64 {
            let name = format!("model.layers.{}.t{}.weight", (index * 7) % 10, index);
            many.push_str(&format!(
                "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[{},{}]}},",
                index * 8,
                index * 8 + 8
            ));
        }
        many.push_str("\"__metadata__\":{\"format\":\"pt\"}}");
        headers.push(many);
        headers
    }

    #[test]
    fn plain_headers_take_the_scanner_and_others_serde() {
        for (json, data) in [
            (
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                " {\n\"a\"\t: { \"data_offsets\":[0, 1],\"shape\" :[ 1 ] ,\"dtype\":\"U8\"}\r}\n ",
                1,
            ),
            (
                r#"{"__metadata__":{"k":"v"},"é":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}"#,
                1,
            ),
            ("{}", 0),
        ] {
            assert!(scanned(json, data), "{json}");
        }
        for (json, data) in [
            // Escapes, even harmless ones, are serde's.
            (
                r#"{"\u0061":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U\u0038","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            // Metadata values that are not strings.
            (r#"{"__metadata__":{"k":1}}"#, 0),
            // Numbers that are not plain u64s.
            (
                r#"{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}"#,
                1,
            ),
            // Unknown, repeated or missing fields; repeated keys.
            (
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":0}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            (r#"{"a":{"dtype":"U8","shape":[1]}}"#, 1),
            (
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                2,
            ),
            (r#"{"__metadata__":{"k":"v","k":"w"}}"#, 0),
            // Invalid JSON and failed checks.
            (
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#,
                1,
            ),
        ] {
            assert!(!scanned(json, data), "{json}");
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "13,500 headers through serde_json: hours under Miri; the other tests walk both paths"
    )]
    fn fast_and_serde_paths_agree() {
        let specials: &[&[u8]] = &[
            b"\"",
            b"\\",
            b"\\u",
            b"\\u0041",
            b"\\ud800",
            b"\\udc00",
            b"\\n",
            b"\x01",
            b"\x7f",
            b"\xc3\xa9",
            b"\xff",
            b"\xe2\x82",
            b" ",
            b"\n",
            b",",
            b":",
            b"[",
            b"]",
            b"{",
            b"}",
            b"0",
            b"-",
            b".",
            b"e",
            b"1e2",
            b"00",
            b"18446744073709551615",
            b"18446744073709551616",
            b"null",
            b"true",
            b"1.5",
            b"__metadata__",
            b"\"x\":",
            b"\"dtype\":\"U8\",",
            b"\"shape\":[1],",
            b"\"data_offsets\":[0,1],",
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut outcomes = [0usize; 2];
        for header in sample_headers() {
            let (fast, serde) = both_ways(header.as_bytes(), 400);
            assert_eq!(fast, serde, "{header}");
            assert!(fast.starts_with("Ok"), "{header}: {fast}");
            for _ in 0..1500 {
                let mut bytes = header.clone().into_bytes();
                for _ in 0..1 + usize::from(next(4) == 0) {
                    let at = next(bytes.len() + 1);
                    match next(4) {
                        0 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        1 if at < bytes.len() => bytes[at] = specials[next(specials.len())][0],
                        2 => {
                            let insert = specials[next(specials.len())];
                            bytes.splice(at..at, insert.iter().copied());
                        }
                        _ => {
                            if at < bytes.len() && bytes[at].is_ascii_digit() {
                                bytes[at] = b'0' + next(10) as u8;
                            } else {
                                bytes.truncate(at);
                            }
                        }
                    }
                }
                let (fast, serde) = both_ways(&bytes, 400);
                assert_eq!(fast, serde, "{}", String::from_utf8_lossy(&bytes));
                outcomes[usize::from(fast.starts_with("Ok"))] += 1;
            }
        }
        assert!(
            outcomes[0] > 1000 && outcomes[1] > 500,
            "{} rejected, {} accepted",
            outcomes[0],
            outcomes[1]
        );
    }

    #[test]
    fn escapes_spaces_and_odd_values_read_as_serde_json_reads_them() -> Result<(), SourceError> {
        let json = "{\"__metadata__\" : {\"z\":{\"b\":1,\"a\":[true,null]}, \"n\":-1.5e3, \"s\":\"\\u00e9\\n\"},\n \"caf\\u00e9\\ud83d\\ude00.\\\"q\\\"\" : {\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
        let bytes = file(json, 2);
        let header = SafetensorsHeader::parse(&bytes, bytes.len() as u64)?;
        assert_eq!(header.tensors[0].name, "café😀.\"q\"");
        assert_eq!(
            header.metadata,
            [
                ("n".into(), "-1500.0".into()),
                ("s".into(), "é\n".into()),
                ("z".into(), r#"{"a":[true,null],"b":1}"#.into()),
            ]
        );
        Ok(())
    }

    #[test]
    fn numbers_that_are_not_plain_offsets_are_rejected() {
        for (shape, offsets) in [
            ("[2]", "[0,2.0]"),
            ("[2]", "[0,2e0]"),
            ("[2]", "[-0,2]"),
            ("[2]", "[0,-2]"),
            ("[2]", "[0, 02]"),
            ("[2]", "[0,18446744073709551618]"),
            ("[2]", "[0,2,4]"),
            ("[2]", "[0]"),
            ("[2]", "[0,\"2\"]"),
            ("[2.0]", "[0,2]"),
            ("[-2]", "[0,2]"),
            ("[18446744073709551616]", "[0,2]"),
            ("[2,]", "[0,2]"),
            ("2", "[0,2]"),
        ] {
            let json =
                format!(r#"{{"a":{{"dtype":"U8","shape":{shape},"data_offsets":{offsets}}}}}"#);
            let bytes = file(&json, 4);
            match SafetensorsHeader::parse(&bytes, bytes.len() as u64) {
                Err(SourceError::MalformedSourceHeader { .. }) => {}
                other => panic!("{json}: {other:?}"),
            }
        }
        // The largest u64 is a number like any other: the size check rejects it.
        let json = r#"{"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,2]}}"#;
        let bytes = file(json, 4);
        assert!(matches!(
            SafetensorsHeader::parse(&bytes, bytes.len() as u64),
            Err(SourceError::SourceTensorSizeMismatch {
                expected: 18446744073709551615,
                ..
            })
        ));
    }

    #[test]
    fn repeated_names_are_rejected_in_and_out_of_order() {
        for json in [
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
            r#"{"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
            r#"{"__metadata__":{},"__metadata__":{}}"#,
        ] {
            let bytes = file(json, 3);
            match SafetensorsHeader::parse(&bytes, bytes.len() as u64) {
                Err(SourceError::MalformedSourceHeader { problem, .. }) => {
                    assert!(problem.contains("duplicate key"), "{json}: {problem}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        // A repeated metadata key is no error: the last value counts (serde_json's map).
        let bytes = file(r#"{"__metadata__":{"k":"1","k":"2"}}"#, 0);
        assert_eq!(
            SafetensorsHeader::parse(&bytes, bytes.len() as u64)
                .map(|header| header.metadata)
                .ok(),
            Some(vec![("k".to_owned(), "2".to_owned())])
        );
    }

    /// A xorshift generator of indices below a bound, from `state`.
    fn xorshift(mut state: u64) -> impl FnMut(usize) -> usize {
        move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        }
    }

    #[test]
    fn precedes_is_str_order() {
        let parts: [&[u8]; 6] = [
            b"",
            b"a",
            b"model.layers.",
            b"1",
            b"\xc3\xa9",
            b"model.layers.10",
        ];
        let mut next = xorshift(0x853c_49e6_748f_ea9b);
        let mut make = || {
            let mut bytes = Vec::new();
            for _ in 0..next(5) {
                bytes.extend_from_slice(parts[next(parts.len())]);
            }
            bytes
        };
        // Fewer under Miri (an interpreter): it checks the code, not coverage.
        for _ in 0..if cfg!(miri) { 300 } else { 20_000 } {
            let (a, b) = (make(), make());
            assert_eq!(precedes(&a, &b), a < b, "{a:?} {b:?}");
            assert!(!precedes(&a, &a));
        }
    }

    #[test]
    fn dtype_of_reads_every_listed_name_and_no_other() {
        for (name, dtype) in DTYPES {
            assert_eq!(dtype_of(name), Some(*dtype));
            assert_eq!(dtype_of(&name.to_lowercase()), None);
            assert_eq!(dtype_of(&format!("{name} ")), None);
        }
        assert_eq!(dtype_of(""), None);
    }

    #[test]
    fn index_lists_shards_and_maps_tensors() -> Result<(), SourceError> {
        let json = br#"{"metadata":{"total_size":10},"weight_map":{"b":"m-2.safetensors","a":"m-1.safetensors","c":"m-2.safetensors"}}"#;
        let index = ShardIndex::parse(json)?;
        assert_eq!(index.shards, ["m-1.safetensors", "m-2.safetensors"]);
        assert_eq!(
            index.weight_map,
            [("a".into(), 0), ("b".into(), 1), ("c".into(), 1)]
        );
        assert_eq!(index.metadata, [("total_size".into(), "10".into())]);
        let shard = |names: &[&str], file: usize| SafetensorsHeader {
            data_start: 8,
            file_length: 8,
            tensors: names
                .iter()
                .map(|name| ForeignTensor {
                    name: (*name).to_owned(),
                    dtype: DType::U8,
                    source_type: 0,
                    shape: vec![0],
                    file,
                    start: 8,
                    end: 8,
                })
                .collect(),
            metadata: Vec::new(),
        };
        index.check_shards(&[shard(&["a"], 0), shard(&["b", "c", "extra"], 1)])?;
        for (headers, needle) in [
            (vec![shard(&["a"], 0)], "2 shards"),
            (
                vec![shard(&["a", "b"], 0), shard(&["b", "c"], 1)],
                "appears in two shards",
            ),
            (
                vec![shard(&["a", "c"], 0), shard(&["b"], 1)],
                "but it is in",
            ),
            (
                vec![shard(&["a"], 0), shard(&["b"], 1)],
                "which does not contain it",
            ),
        ] {
            match index.check_shards(&headers) {
                Err(error) => assert!(error.to_string().contains(needle), "{error}"),
                Ok(()) => panic!("accepted shards that should fail with {needle:?}"),
            }
        }
        for bad in [
            &br#"{"weight_map":{"a":"../x.safetensors"}}"#[..],
            br#"{"weight_map":{"a":1}}"#,
            br#"{"metadata":{}}"#,
            br#"{"weight_map":[]}"#,
            b"[",
        ] {
            assert!(
                matches!(
                    ShardIndex::parse(bad),
                    Err(SourceError::MalformedSourceHeader { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        Ok(())
    }
}
