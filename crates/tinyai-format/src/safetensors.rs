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
use crate::foreign::{ForeignTensor, element_count};
use crate::{DType, limits};

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
    DTYPES
        .iter()
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, dtype)| *dtype)
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
        let entries: Entries = serde_json::from_slice(json).map_err(|error| {
            malformed(
                format!("JSON header (bytes 8..{data_start})"),
                8 + error_offset(json, &error),
                error.to_string(),
            )
        })?;
        let data_length = file_length - data_start;
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
            let what = || format!("tensor {name:?}");
            let info: RawInfo = serde_json::from_value(value)
                .map_err(|error| malformed(what(), 8, error.to_string()))?;
            let Some(dtype) = dtype_of(&info.dtype) else {
                return Err(SourceError::UnsupportedSourceDType {
                    format: FORMAT,
                    tensor: name,
                    dtype: info.dtype,
                });
            };
            if info.shape.len() > limits::MAX_RANK {
                return Err(malformed(
                    what(),
                    8,
                    format!("rank {} exceeds {}", info.shape.len(), limits::MAX_RANK),
                ));
            }
            let (begin, end) = info.data_offsets;
            if begin > end {
                return Err(malformed(
                    what(),
                    8,
                    format!("data_offsets [{begin}, {end}] are reversed"),
                ));
            }
            if end > data_length {
                return Err(SourceError::SourceTensorOutOfBounds {
                    format: FORMAT,
                    tensor: name,
                    start: data_start.saturating_add(begin),
                    end: data_start.saturating_add(end),
                    data_start,
                    data_end: file_length,
                });
            }
            let bits = dtype.bits().unwrap_or(8);
            let expected = element_count(&info.shape)
                .and_then(|count| count.checked_mul(u128::from(bits)))
                .map_or(u128::MAX, |bits| bits.div_ceil(8));
            if expected != u128::from(end - begin) {
                return Err(SourceError::SourceTensorSizeMismatch {
                    format: FORMAT,
                    tensor: name,
                    dtype: info.dtype,
                    shape: info.shape,
                    expected,
                    actual: end - begin,
                });
            }
            tensors.push(ForeignTensor {
                name,
                dtype,
                source_type: 0,
                shape: info.shape,
                file,
                start: data_start + begin,
                end: data_start + end,
            });
        }
        tensors.sort_by_key(|tensor| (tensor.start, tensor.end));
        for pair in tensors.windows(2) {
            if pair[1].start < pair[0].end {
                return Err(SourceError::SourceTensorsOverlap {
                    format: FORMAT,
                    first: pair[0].name.clone(),
                    first_start: pair[0].start,
                    first_end: pair[0].end,
                    second: pair[1].name.clone(),
                    second_start: pair[1].start,
                });
            }
        }
        Ok(SafetensorsHeader {
            data_start,
            file_length,
            tensors,
            metadata,
        })
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
