//! A safetensors file, a sharded safetensors set or a GGUF file presented as a
//! [`Model`], so that the store (and anything else that reads a [`Model`]) opens
//! it as it is, with no conversion.
//!
//! # Layers and the virtual byte space
//! Tensors are grouped into layers by [`crate::grouping`] (the rules `tmai convert`
//! uses, so a directly opened file and its conversion have the same layers, in the
//! same order, with the same names). A layer's bytes are the range that covers its
//! tensors ([`crate::foreign::LayerSpan`]): it need not start on a page or on any
//! alignment, may share a page with a neighbouring layer, and when the layer's
//! tensors are not adjacent in the file it also covers the bytes between them.
//!
//! The files of a set are laid end to end in one *virtual byte space*: file `i`
//! starts at [`FilePlacement::base`], the previous file's end rounded up to
//! [`FILE_PLACEMENT_ALIGN`]; the bytes between two files read as zero. Layer
//! offsets ([`crate::LayerInfo::offset`]) are offsets in that space; for a single
//! file they are plain file offsets. A layer of a sharded set whose tensors lie in
//! two shards covers the end of one and the start of the next.
//!
//! # What differs from a `.tmai` file
//! No checksums ([`crate::LayerInfo::checksum`] is `None`, verifying says
//! [`crate::FormatError::NoChecksum`]), layers not aligned ([`Model::alignment`] is 1),
//! and [`Model::kind`] says which format it came from.

use crate::foreign::{FileKind, TensorTable};
use crate::gguf::{GgufHeader, GgufValue, TYPE_NAMES, min_value_size};
use crate::grouping::{CompactPlan, Grouping};
use crate::safetensors::{SafetensorsHeader, ShardIndex, TableHeader, parse_table};
use crate::writer::precision_of;
use crate::{DType, FormatError, Model, SourceError};

/// Alignment of each file's start in the virtual byte space of a set (the
/// largest page size of common systems, so that a mapping of a set may place
/// each file at its base).
pub const FILE_PLACEMENT_ALIGN: u64 = 1 << 16;

/// Longest metadata text kept for one GGUF value (longer strings and arrays
/// are summarised, e.g. `{"omitted":"array","element_type":"string","count":30522}`).
pub const GGUF_VALUE_TEXT_LIMIT: usize = 64 << 10;

/// Where one file of a set lies in the virtual byte space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePlacement {
    /// Offset of the file's first byte in the virtual byte space.
    pub base: u64,
    /// The file's length.
    pub length: u64,
}

/// One layer of a [`ForeignModel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirectLayer {
    /// The name, `layer_names[name_start..name_end]` of its [`ForeignModel`].
    pub(crate) name_start: usize,
    pub(crate) name_end: usize,
    /// Start in the virtual byte space.
    pub(crate) offset: u64,
    pub(crate) length: u64,
    /// Index of the layer's first tensor in [`ForeignModel::tensors`].
    pub(crate) first_tensor: u64,
    pub(crate) tensor_count: u64,
    pub(crate) dtype: DType,
    pub(crate) precision_bits: u32,
}

/// An owned description of a directly opened safetensors file, sharded set or
/// GGUF file; [`ForeignModel::model`] views it as a [`Model`].
#[derive(Clone, Debug)]
pub struct ForeignModel {
    kind: FileKind,
    version: u16,
    files: Vec<FilePlacement>,
    /// In layer order: layer 0's tensors (in source order), then layer 1's, ….
    pub(crate) tensors: TensorTable,
    pub(crate) layers: Vec<DirectLayer>,
    /// Every layer's name, one after another.
    layer_names: String,
    pub(crate) metadata: Vec<(String, String)>,
    length: u64,
}

impl ForeignModel {
    /// A single safetensors file.
    ///
    /// # Errors
    /// [`FormatError::InvalidInput`] when a tensor does not lie in the file
    /// (only for a header not made by [`SafetensorsHeader::parse`], which checks that).
    pub fn from_safetensors(
        header: SafetensorsHeader,
        grouping: &Grouping,
    ) -> Result<ForeignModel, FormatError> {
        Self::from_table_header(
            TableHeader {
                table: TensorTable::of(&header.tensors),
                metadata: header.metadata,
                file_length: header.file_length,
                data_start: header.data_start,
            },
            grouping,
        )
    }

    /// A single safetensors file, parsed from `head` (its first bytes, as for
    /// [`SafetensorsHeader::parse`]) and grouped: what
    /// [`SafetensorsHeader::parse`] and [`ForeignModel::from_safetensors`] do,
    /// with the same checks and errors, without an allocation per tensor.
    ///
    /// # Errors
    /// [`SafetensorsHeader::parse`]'s, as [`FormatError::Source`].
    pub fn parse_safetensors(
        head: &[u8],
        file_length: u64,
        grouping: &Grouping,
    ) -> Result<ForeignModel, FormatError> {
        let header = parse_table(head, file_length, 0, true)?;
        Self::from_table_header(header, grouping)
    }

    fn from_table_header(
        header: TableHeader,
        grouping: &Grouping,
    ) -> Result<ForeignModel, FormatError> {
        let files = vec![header.file_length];
        Self::build(
            FileKind::Safetensors,
            0,
            &files,
            header.table,
            header.metadata,
            grouping,
        )
    }

    /// A sharded safetensors set: `headers[i]` is the header of `index.shards[i]`,
    /// parsed with [`SafetensorsHeader::parse_shard`] for file `i`.
    pub fn from_shards(
        index: &ShardIndex,
        headers: Vec<SafetensorsHeader>,
        grouping: &Grouping,
    ) -> Result<ForeignModel, FormatError> {
        index.check_shards(&headers)?;
        let files: Vec<u64> = headers.iter().map(|header| header.file_length).collect();
        let mut tensors = Vec::new();
        let mut metadata = index.metadata.clone();
        for header in headers {
            tensors.extend(header.tensors);
            for (key, value) in header.metadata {
                if !metadata.iter().any(|(existing, _)| *existing == key) {
                    metadata.push((key, value));
                }
            }
        }
        Self::build(
            FileKind::SafetensorsIndex,
            0,
            &files,
            TensorTable::of(&tensors),
            metadata,
            grouping,
        )
    }

    /// A GGUF file; `head` holds at least the file's first
    /// [`GgufHeader::header_length`] bytes (metadata strings are read from it).
    ///
    /// # Errors
    /// As [`ForeignModel::from_safetensors`].
    pub fn from_gguf(
        header: GgufHeader,
        head: &[u8],
        grouping: &Grouping,
    ) -> Result<ForeignModel, FormatError> {
        let metadata = header
            .metadata
            .iter()
            .map(|entry| (entry.key.clone(), gguf_value_text(head, &entry.value)))
            .collect();
        let files = vec![header.file_length];
        Self::build(
            FileKind::Gguf,
            header.version as u16,
            &files,
            TensorTable::of(&header.tensors),
            metadata,
            grouping,
        )
    }

    fn build(
        kind: FileKind,
        version: u16,
        file_lengths: &[u64],
        source: TensorTable,
        metadata: Vec<(String, String)>,
        grouping: &Grouping,
    ) -> Result<ForeignModel, FormatError> {
        let too_large = || {
            FormatError::InvalidInput(format!(
                "{} files of {} bytes in all do not fit a 64-bit byte space",
                file_lengths.len(),
                file_lengths
                    .iter()
                    .fold(0u64, |sum, &l| sum.saturating_add(l))
            ))
        };
        let mut files = Vec::with_capacity(file_lengths.len());
        let mut next = 0u64;
        for &length in file_lengths {
            files.push(FilePlacement { base: next, length });
            next = next
                .checked_add(length)
                .and_then(|end| end.checked_next_multiple_of(FILE_PLACEMENT_ALIGN))
                .ok_or_else(too_large)?;
        }
        let length = files.last().map_or(0, |last| last.base + last.length);
        for tensor in &source.entries {
            let inside = files
                .get(tensor.file)
                .is_some_and(|file| tensor.start <= tensor.end && tensor.end <= file.length);
            if !inside {
                return Err(FormatError::InvalidInput(format!(
                    "tensor {} (file {}, bytes {}..{}) does not lie in its file",
                    source.name(tensor),
                    tensor.file,
                    tensor.start,
                    tensor.end
                )));
            }
        }
        let planned = CompactPlan::new(
            source.entries.len(),
            |index| {
                source
                    .entries
                    .get(index)
                    .map_or("", |tensor| source.name(tensor))
            },
            grouping,
        );
        // Names and shapes stay where they are; entries go into layer order.
        let mut entries = Vec::with_capacity(source.entries.len());
        let mut layers = Vec::with_capacity(planned.layers.len());
        let mut layer_names = String::new();
        for (name, runs) in &planned.layers {
            // The layer covers its tensors' lowest start to highest end in the
            // virtual byte space (as `group_layers`'s spans, first to last).
            let mut covered: Option<(u64, u64)> = None;
            let first_tensor = entries.len() as u64;
            let mut dtype = None;
            // The last of the longest tensors, whose precision the layer takes.
            let mut widest: (u64, Option<(DType, u32)>) = (0, None);
            for run in planned.runs.get(runs.clone()).unwrap_or_default() {
                let members = source.entries.get(run.clone()).unwrap_or_default();
                for tensor in members {
                    let base = files[tensor.file].base;
                    let (start, end) = (base + tensor.start, base + tensor.end);
                    covered = Some(
                        covered.map_or((start, end), |(low, high)| (low.min(start), high.max(end))),
                    );
                    dtype = Some(match dtype {
                        None => tensor.dtype,
                        Some(existing) if existing == tensor.dtype => existing,
                        Some(_) => DType::Mixed,
                    });
                    if tensor.length() >= widest.0 {
                        widest = (tensor.length(), Some((tensor.dtype, tensor.source_type)));
                    }
                }
                entries.extend_from_slice(members);
            }
            let Some((offset, end)) = covered else {
                continue;
            };
            let name_start = layer_names.len();
            name.write_to(&mut layer_names);
            layers.push(DirectLayer {
                name_start,
                name_end: layer_names.len(),
                offset,
                length: end - offset,
                first_tensor,
                tensor_count: entries.len() as u64 - first_tensor,
                dtype: dtype.unwrap_or(DType::Opaque),
                precision_bits: u32::from(
                    widest
                        .1
                        .map_or(8, |(dtype, source_type)| precision_of(dtype, source_type)),
                ),
            });
        }
        let tensors = TensorTable { entries, ..source };
        Ok(ForeignModel {
            kind,
            version,
            files,
            tensors,
            layers,
            layer_names,
            metadata,
            length,
        })
    }

    /// The name of `layer`, one of this model's layers.
    pub(crate) fn layer_name(&self, layer: &DirectLayer) -> &str {
        self.layer_names
            .get(layer.name_start..layer.name_end)
            .unwrap_or_default()
    }

    /// The [`Model`] view (layers, tensors, metadata).
    pub fn model(&self) -> Model<'_> {
        Model::foreign(self)
    }

    /// Which format the files are in.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// The GGUF version (2 or 3); 0 for safetensors.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Where each file lies in the virtual byte space (one entry for a single file).
    pub fn files(&self) -> &[FilePlacement] {
        &self.files
    }

    /// Length of the virtual byte space (the file's length for a single file).
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The virtual offset of byte `offset` of file `file`.
    pub fn virtual_offset(&self, file: usize, offset: u64) -> Option<u64> {
        let placement = self.files.get(file)?;
        (offset <= placement.length).then_some(placement.base + offset)
    }
}

/// First bytes read of a header before the parser says how many it needs.
const FIRST_READ: u64 = 64 << 10;

/// The longest header [`read_direct`] reads (a GGUF header's length is only
/// known while parsing it; a safetensors header is limited to
/// [`crate::safetensors::MAX_HEADER_LENGTH`] by its own parser).
pub const MAX_DIRECT_HEADER: u64 = 1 << 30;

/// Reads what [`ForeignModel`] needs from a file set through caller-supplied I/O
/// and builds it: `kind` from [`crate::detect`] on the first bytes of `main`
/// ([`FileKind::Safetensors`], [`FileKind::SafetensorsIndex`] or [`FileKind::Gguf`];
/// anything else is [`FormatError::InvalidInput`]).
///
/// `length` gives a source's length, `read_at` fills a buffer from a source
/// at an offset (or fails), and `open_shard` opens a shard of an index by the
/// name the index gives it (a plain relative path, checked by
/// [`ShardIndex::parse`]). Returns the model and the data files in
/// [`ForeignModel::files`] order (`main` itself unless it is an index).
/// Headers are read in growing prefixes (64 KiB first, then what the parser asks
/// for), never more than the file holds.
pub fn read_direct<S, E: From<FormatError>>(
    kind: FileKind,
    main: S,
    length: impl Fn(&S) -> u64,
    read_at: impl Fn(&S, u64, &mut [u8]) -> Result<(), E>,
    mut open_shard: impl FnMut(&str) -> Result<S, E>,
    grouping: &Grouping,
) -> Result<(ForeignModel, Vec<S>), E> {
    let head_of = |source: &S, parse: &mut dyn FnMut(&[u8]) -> Result<(), SourceError>| {
        let file_length = length(source);
        let mut given = file_length.min(FIRST_READ);
        loop {
            let mut head = vec![0u8; usize::try_from(given).map_err(|_| too_large(given))?];
            read_at(source, 0, &mut head)?;
            match parse(&head) {
                Err(SourceError::NeedMoreBytes { needed, .. })
                    if needed > given && needed <= file_length =>
                {
                    if needed > MAX_DIRECT_HEADER {
                        return Err(E::from(FormatError::InvalidInput(format!(
                            "the header needs more than {needed} bytes, beyond the limit of \
                             {MAX_DIRECT_HEADER} bytes read to open a file directly"
                        ))));
                    }
                    given = needed
                        .max(given.saturating_mul(2))
                        .min(file_length)
                        .min(MAX_DIRECT_HEADER);
                }
                Err(error) => return Err(E::from(FormatError::from(error))),
                Ok(()) => return Ok(head),
            }
        }
    };
    match kind {
        FileKind::Safetensors => {
            let mut header = None;
            head_of(&main, &mut |head| {
                header = Some(parse_table(head, length(&main), 0, true)?);
                Ok(())
            })?;
            let header = header.ok_or_else(|| FormatError::InvalidInput("no header".into()))?;
            Ok((
                ForeignModel::from_table_header(header, grouping)?,
                vec![main],
            ))
        }
        FileKind::Gguf => {
            let mut header = None;
            let head = head_of(&main, &mut |head| {
                header = Some(GgufHeader::parse(head, length(&main))?);
                Ok(())
            })?;
            let header = header.ok_or_else(|| FormatError::InvalidInput("no header".into()))?;
            Ok((
                ForeignModel::from_gguf(header, &head, grouping)?,
                vec![main],
            ))
        }
        FileKind::SafetensorsIndex => {
            let index_length = length(&main);
            if index_length > crate::safetensors::MAX_INDEX_LENGTH {
                return Err(E::from(FormatError::from(
                    SourceError::MalformedSourceHeader {
                        format: "safetensors index",
                        what: "index JSON".to_owned(),
                        offset: 0,
                        problem: format!(
                            "{index_length} bytes exceed the limit of {} bytes",
                            crate::safetensors::MAX_INDEX_LENGTH
                        ),
                    },
                )));
            }
            let mut json = vec![0u8; index_length as usize];
            read_at(&main, 0, &mut json)?;
            let index = ShardIndex::parse(&json).map_err(|error| E::from(error.into()))?;
            let mut shards = Vec::with_capacity(index.shards.len());
            let mut headers = Vec::with_capacity(index.shards.len());
            for (file, name) in index.shards.iter().enumerate() {
                let shard = open_shard(name)?;
                let mut header = None;
                head_of(&shard, &mut |head| {
                    header = Some(SafetensorsHeader::parse_shard(head, length(&shard), file)?);
                    Ok(())
                })?;
                headers.push(header.ok_or_else(|| FormatError::InvalidInput("no header".into()))?);
                shards.push(shard);
            }
            let model = ForeignModel::from_shards(&index, headers, grouping)?;
            Ok((model, shards))
        }
        other => Err(E::from(FormatError::InvalidInput(format!(
            "{} cannot be opened as a safetensors or GGUF model",
            other.describe()
        )))),
    }
}

fn too_large(length: u64) -> FormatError {
    FormatError::InvalidInput(format!(
        "a header of {length} bytes does not fit in this address space"
    ))
}

/// Metadata text of a GGUF value: numbers and booleans as text, strings as
/// their (lossily decoded) UTF-8, arrays as JSON; a string or array whose text
/// would exceed [`GGUF_VALUE_TEXT_LIMIT`] as a JSON summary.
pub fn gguf_value_text(head: &[u8], value: &GgufValue) -> String {
    match *value {
        GgufValue::String { start, end } => {
            let length = end.saturating_sub(start);
            match GgufHeader::string_bytes(head, value) {
                Some(bytes) if bytes.len() <= GGUF_VALUE_TEXT_LIMIT => {
                    String::from_utf8_lossy(bytes).into_owned()
                }
                _ => format!(r#"{{"omitted":"string","length":{length}}}"#),
            }
        }
        GgufValue::Array {
            element_type,
            count,
            start,
            end,
        } => {
            let mut out = String::new();
            let fits = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(start, end)| head.get(start..end))
                .is_some_and(|bytes| {
                    let mut at = 0;
                    array_json(bytes, &mut at, element_type, count, 0, &mut out).is_some()
                });
            if fits {
                out
            } else {
                let name = TYPE_NAMES.get(element_type as usize).unwrap_or(&"unknown");
                format!(r#"{{"omitted":"array","element_type":"{name}","count":{count}}}"#)
            }
        }
        scalar => scalar_text(scalar, false),
    }
}

fn scalar_text(value: GgufValue, json: bool) -> String {
    let float = |value: f64| {
        if json && !value.is_finite() {
            "null".to_owned()
        } else {
            value.to_string()
        }
    };
    match value {
        GgufValue::U8(v) => v.to_string(),
        GgufValue::I8(v) => v.to_string(),
        GgufValue::U16(v) => v.to_string(),
        GgufValue::I16(v) => v.to_string(),
        GgufValue::U32(v) => v.to_string(),
        GgufValue::I32(v) => v.to_string(),
        GgufValue::F32(v) => float(f64::from(v)),
        GgufValue::Bool(v) => v.to_string(),
        GgufValue::U64(v) => v.to_string(),
        GgufValue::I64(v) => v.to_string(),
        GgufValue::F64(v) => float(v),
        GgufValue::String { .. } | GgufValue::Array { .. } => String::new(),
    }
}

/// Appends the JSON of `count` encoded elements of type `ty` at `bytes[*at..]`;
/// `None` when the text would exceed the limit or the bytes are malformed (the
/// header parser has checked them, so that only happens for the limit).
fn array_json(
    bytes: &[u8],
    at: &mut usize,
    ty: u32,
    count: u64,
    depth: u32,
    out: &mut String,
) -> Option<()> {
    let take = |n: usize, at: &mut usize| -> Option<&[u8]> {
        let slice = bytes.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(slice)
    };
    min_value_size(ty)?;
    out.push('[');
    for index in 0..count {
        if index > 0 {
            out.push(',');
        }
        match ty {
            8 => {
                let length = u64::from_le_bytes(take(8, at)?.try_into().ok()?);
                let text = take(usize::try_from(length).ok()?, at)?;
                let text = serde_json::Value::String(String::from_utf8_lossy(text).into_owned());
                out.push_str(&text.to_string());
            }
            9 => {
                if depth >= crate::gguf::MAX_ARRAY_DEPTH {
                    return None;
                }
                let inner = u32::from_le_bytes(take(4, at)?.try_into().ok()?);
                let inner_count = u64::from_le_bytes(take(8, at)?.try_into().ok()?);
                array_json(bytes, at, inner, inner_count, depth + 1, out)?;
            }
            _ => {
                let size = min_value_size(ty)? as usize;
                let raw = take(size, at)?;
                let value = decode_scalar(ty, raw)?;
                out.push_str(&scalar_text(value, true));
            }
        }
        if out.len() > GGUF_VALUE_TEXT_LIMIT {
            return None;
        }
    }
    out.push(']');
    Some(())
}

fn decode_scalar(ty: u32, raw: &[u8]) -> Option<GgufValue> {
    let bytes = |n: usize| -> Option<[u8; 8]> {
        let mut word = [0u8; 8];
        word[..n].copy_from_slice(raw.get(..n)?);
        Some(word)
    };
    Some(match ty {
        0 => GgufValue::U8(raw[0]),
        1 => GgufValue::I8(raw[0] as i8),
        2 => GgufValue::U16(u64::from_le_bytes(bytes(2)?) as u16),
        3 => GgufValue::I16(u64::from_le_bytes(bytes(2)?) as u16 as i16),
        4 => GgufValue::U32(u64::from_le_bytes(bytes(4)?) as u32),
        5 => GgufValue::I32(u64::from_le_bytes(bytes(4)?) as u32 as i32),
        6 => GgufValue::F32(f32::from_bits(u64::from_le_bytes(bytes(4)?) as u32)),
        7 => GgufValue::Bool(raw[0] != 0),
        10 => GgufValue::U64(u64::from_le_bytes(bytes(8)?)),
        11 => GgufValue::I64(u64::from_le_bytes(bytes(8)?) as i64),
        12 => GgufValue::F64(f64::from_bits(u64::from_le_bytes(bytes(8)?))),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::foreign::test_tensor as tensor;

    #[test]
    fn files_of_a_set_are_laid_end_to_end_at_aligned_bases() {
        let source = vec![
            tensor("embed.w", 0, 8, 100),
            tensor("layers.0.a", 0, 100, 70_000),
            tensor("layers.0.b", 1, 16, 32),
            tensor("layers.1.a", 1, 32, 40),
        ];
        let model = ForeignModel::build(
            FileKind::SafetensorsIndex,
            0,
            &[70_000, 40],
            TensorTable::of(&source),
            Vec::new(),
            &Grouping::Default,
        )
        .unwrap();
        assert_eq!(
            model.files(),
            [
                FilePlacement {
                    base: 0,
                    length: 70_000
                },
                FilePlacement {
                    base: 131_072,
                    length: 40
                }
            ]
        );
        assert_eq!(model.length(), 131_112);
        let view = model.model();
        let layer = view.layer(1).unwrap();
        assert_eq!((layer.offset, layer.length), (100, 131_072 + 32 - 100));
        let b = view.find_tensor(1, "layers.0.b").unwrap().unwrap();
        assert_eq!(b.offset_in_layer, 131_072 + 16 - 100);
        assert_eq!(view.alignment(), 1);
        assert_eq!(layer.checksum, None);
    }

    #[test]
    fn tensors_outside_their_file_are_errors_not_panics() {
        for (file, start, end) in [(1, 0, 8), (0, 9, 8), (0, 0, 101)] {
            let mut bad = tensor("layers.0.w", 0, 0, 8);
            (bad.file, bad.start, bad.end) = (file, start, end);
            let result = ForeignModel::build(
                FileKind::Safetensors,
                0,
                &[100],
                TensorTable::of(&[bad]),
                Vec::new(),
                &Grouping::Default,
            );
            assert!(matches!(result, Err(FormatError::InvalidInput(_))));
        }
        let huge = ForeignModel::build(
            FileKind::SafetensorsIndex,
            0,
            &[u64::MAX - 10, 100],
            TensorTable::default(),
            Vec::new(),
            &Grouping::Default,
        );
        assert!(matches!(huge, Err(FormatError::InvalidInput(_))));
    }

    #[test]
    fn gguf_arrays_become_json_and_long_ones_a_summary() {
        let mut head = Vec::new();
        for word in [7u32, 9] {
            head.extend_from_slice(&word.to_le_bytes());
        }
        let array = GgufValue::Array {
            element_type: 4,
            count: 2,
            start: 0,
            end: 8,
        };
        assert_eq!(gguf_value_text(&head, &array), "[7,9]");
        let too_long = GgufValue::Array {
            element_type: 4,
            count: 2,
            start: 0,
            end: 80,
        };
        assert_eq!(
            gguf_value_text(&head, &too_long),
            r#"{"omitted":"array","element_type":"uint32","count":2}"#
        );
        assert_eq!(gguf_value_text(&head, &GgufValue::F32(0.5)), "0.5");
    }
}
