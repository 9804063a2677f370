//! Parsing and validation: bytes in, typed borrowed views out.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use zerocopy::FromBytes;

use crate::checksum::crc32c;
use crate::direct::ForeignModel;
use crate::dtype::expected_byte_length;
use crate::error::{FormatError, StringOwner, Table};
use crate::foreign::FileKind;
use crate::raw::{
    HEADER_SIZE, LAYER_ENTRY_SIZE, LAYER_FLAG_HAS_CHECKSUM, MAGIC_V1, MAGIC_V2,
    METADATA_ENTRY_SIZE, RawHeader, RawLayer, RawMetadata, RawTensor, RawV1Header, RawV1Layer,
    TENSOR_ENTRY_SIZE, V1_HEADER_SIZE, V1_LAYER_ENTRY_SIZE,
};
use crate::{DType, limits};

/// A fast, non-cryptographic hasher (FxHash's multiply-rotate) for duplicate-name
/// checks at open. Names come from the file, so a hostile file could force
/// collisions; the cost is bounded by the (already size-checked) table sizes.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The major version this crate writes and reads natively.
pub const MAJOR_VERSION: u16 = 2;
/// The highest minor version of [`MAJOR_VERSION`] this crate knows.
pub const MINOR_VERSION: u16 = 0;

/// A format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version: 1 (legacy TinyAI C layout) or 2.
    pub major: u16,
    /// Minor version (always 0 for v1).
    pub minor: u16,
}

/// Where a file's header and tables are: all a reader that does not map the
/// whole file needs to fetch before calling [`Model::parse_parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLocation {
    /// The format version announced by the header.
    pub version: Version,
    /// Bytes of header that must be passed as `head` (from offset 0).
    pub header_length: u64,
    /// Absolute byte range of the tables (v2: layer table start to string table end;
    /// v1: the layer table).
    pub tables: Range<u64>,
}

/// A parsed, validated `.tmai` model: a borrowed view of header and tables.
///
/// Construction validates everything a reader could trip on (see [`FormatError`]);
/// afterwards every accessor is infallible except for index checks. Layer bytes are
/// never read by parsing; [`Model::verify_layer`] checks them on request.
///
/// Legacy v1 files ([`Model::is_legacy`]) parse into the same type. Their layers
/// have no name ([`LayerInfo::name`] is `None`), no tensors, dtype [`DType::Opaque`]
/// and no checksum ([`LayerInfo::checksum`] is `None`); the model name appears as
/// metadata key `general.name`.
#[derive(Clone, Debug)]
pub struct Model<'a> {
    data: Option<&'a [u8]>,
    file_length: u64,
    version: Version,
    inner: Inner<'a>,
}

#[derive(Clone, Debug)]
enum Inner<'a> {
    V2 {
        alignment: u64,
        layers: &'a [RawLayer],
        tensors: &'a [RawTensor],
        metadata: &'a [RawMetadata],
        strings: &'a [u8],
    },
    V1 {
        name: &'a str,
        layers: &'a [RawV1Layer],
    },
    Foreign(&'a ForeignModel),
}

/// One layer, as described by the layer table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo<'a> {
    /// 0-based index.
    pub index: u64,
    /// Name (`None` for legacy v1 layers).
    pub name: Option<&'a str>,
    /// Absolute offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Bits per weight.
    pub precision_bits: u32,
    /// Element type (mixed when tensors differ; opaque for v1).
    pub dtype: DType,
    /// CRC-32C of the bytes, when the file has one.
    pub checksum: Option<u32>,
    /// Range of the layer's tensors in the tensor table (empty for v1).
    pub tensors: Range<u64>,
}

impl LayerInfo<'_> {
    /// Absolute byte range of the layer.
    pub fn byte_range(&self) -> Range<u64> {
        self.offset..self.offset + self.length
    }
}

/// One tensor, as described by the tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    /// Index in the tensor table.
    pub index: u64,
    /// Layer it belongs to.
    pub layer: u64,
    /// Name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Source-format type id (GGML type when `dtype` is [`DType::Ggml`]).
    pub source_type: u32,
    rank: u16,
    dims: [u64; 8],
    /// Offset of the first byte within its layer.
    pub offset_in_layer: u64,
    /// Length in bytes.
    pub length: u64,
}

impl TensorInfo<'_> {
    /// Dimensions, outermost first (empty for a scalar).
    pub fn shape(&self) -> &[u64] {
        &self.dims[..usize::from(self.rank)]
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn element_count(&self) -> u128 {
        self.shape().iter().map(|&d| u128::from(d)).product()
    }

    /// Byte range within the layer.
    pub fn range_in_layer(&self) -> Range<u64> {
        self.offset_in_layer..self.offset_in_layer + self.length
    }
}

fn read_u64_table<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    bytes: &[u8],
    count: u64,
    entry_size: usize,
) -> Option<&[T]> {
    let length = usize::try_from(count).ok()?.checked_mul(entry_size)?;
    <[T]>::ref_from_bytes(bytes.get(..length)?).ok()
}

fn as_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl<'a> Model<'a> {
    /// Parses and validates a whole file held in memory (a `Vec`, a mapping …).
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        let file_length = bytes.len() as u64;
        let location = Self::locate_tables(bytes, file_length)?;
        let tables = &bytes[as_usize(location.tables.start)..as_usize(location.tables.end)];
        let mut model = Self::parse_parts(bytes, tables, location.tables.start, file_length)?;
        model.data = Some(bytes);
        Ok(model)
    }

    /// Reads the header at the start of `head` (at least the first 4096 bytes of the
    /// file, or the whole file if shorter) and says where the tables are, so a reader
    /// that does not map the file can fetch just those bytes for [`Model::parse_parts`].
    pub fn locate_tables(head: &[u8], file_length: u64) -> Result<TableLocation, FormatError> {
        if head.is_empty() {
            return Err(FormatError::Truncated {
                what: "file (it is empty)",
                needed: HEADER_SIZE as u64,
                available: 0,
            });
        }
        if head.len() >= 4 && head[..4] == MAGIC_V1 {
            return locate_v1(head, file_length);
        }
        if head.len() < 8 || head[..8] != MAGIC_V2 {
            if head.len() < 8 && MAGIC_V2.starts_with(head) && !head.is_empty() {
                return Err(FormatError::Truncated {
                    what: "v2 header",
                    needed: HEADER_SIZE as u64,
                    available: head.len() as u64,
                });
            }
            return Err(match crate::foreign::detect(head, file_length) {
                kind @ (crate::foreign::FileKind::Safetensors
                | crate::foreign::FileKind::SafetensorsIndex
                | crate::foreign::FileKind::Gguf) => FormatError::ForeignFormat { kind },
                _ => FormatError::BadMagic {
                    found: head.iter().take(8).copied().collect(),
                },
            });
        }
        let header = header_of(head)?;
        let version = Version {
            major: header.major.get(),
            minor: header.minor.get(),
        };
        if version.major != MAJOR_VERSION {
            return Err(FormatError::UnsupportedVersion {
                major: u32::from(version.major),
                minor: u32::from(version.minor),
            });
        }
        let header_size = header.header_size.get();
        if !(HEADER_SIZE as u32..=limits::MAX_HEADER_SIZE as u32).contains(&header_size)
            || header_size % 8 != 0
        {
            return Err(FormatError::InvalidHeaderSize { header_size });
        }
        let header_size = u64::from(header_size);
        if (head.len() as u64) < header_size {
            return Err(FormatError::Truncated {
                what: "v2 header",
                needed: header_size,
                available: head.len() as u64,
            });
        }
        let computed = header_crc(&head[..as_usize(header_size)]);
        if computed != header.header_crc32c.get() {
            return Err(FormatError::HeaderChecksumMismatch {
                stored: header.header_crc32c.get(),
                computed,
            });
        }
        if header.file_length.get() != file_length {
            return Err(FormatError::FileLengthMismatch {
                expected: header.file_length.get(),
                actual: file_length,
            });
        }
        let alignment = header.alignment.get();
        if !alignment.is_power_of_two()
            || !(limits::MIN_ALIGNMENT..=limits::MAX_ALIGNMENT).contains(&alignment)
        {
            return Err(FormatError::InvalidAlignment { alignment });
        }
        let tables = [
            (
                Table::Layers,
                header.layer_table_offset.get(),
                header.layer_count.get(),
                LAYER_ENTRY_SIZE as u64,
            ),
            (
                Table::Tensors,
                header.tensor_table_offset.get(),
                header.tensor_count.get(),
                TENSOR_ENTRY_SIZE as u64,
            ),
            (
                Table::Metadata,
                header.metadata_table_offset.get(),
                header.metadata_count.get(),
                METADATA_ENTRY_SIZE as u64,
            ),
            (
                Table::Strings,
                header.string_table_offset.get(),
                header.string_table_length.get(),
                1,
            ),
        ];
        let mut previous: Option<(Table, u64)> = None;
        for (table, offset, count, entry_size) in tables {
            let length = count
                .checked_mul(entry_size)
                .filter(|&length| length <= file_length)
                .ok_or(FormatError::AbsurdCount {
                    table,
                    count,
                    entry_size,
                    file_length,
                })?;
            if offset % 8 != 0 {
                return Err(FormatError::MisalignedTable { table, offset });
            }
            let end = offset.checked_add(length).filter(|&end| end <= file_length);
            let end = match end {
                Some(end) if offset >= header_size => end,
                _ => {
                    return Err(FormatError::TableOutOfBounds {
                        table,
                        offset,
                        length,
                        file_length,
                    });
                }
            };
            if let Some((first, first_end)) = previous
                && offset < first_end
            {
                return Err(FormatError::TablesOverlap {
                    first,
                    second: table,
                    first_end,
                    offset,
                });
            }
            previous = Some((table, end));
        }
        let start = header.layer_table_offset.get();
        let end = previous.map_or(start, |(_, end)| end);
        Ok(TableLocation {
            version,
            header_length: header_size,
            tables: start..end,
        })
    }

    /// Parses a model from its header (`head`, starting at file offset 0, at least
    /// [`TableLocation::header_length`] bytes) and its tables (`tables`, the bytes of
    /// [`TableLocation::tables`], starting at absolute offset `tables_offset`).
    ///
    /// The result validates exactly as [`Model::parse`] does but cannot serve layer
    /// bytes ([`Model::layer_bytes`] returns [`FormatError::NoLayerData`]).
    pub fn parse_parts(
        head: &'a [u8],
        tables: &'a [u8],
        tables_offset: u64,
        file_length: u64,
    ) -> Result<Model<'a>, FormatError> {
        let location = Self::locate_tables(head, file_length)?;
        let expected_length = location.tables.end - location.tables.start;
        if location.tables.start != tables_offset || (tables.len() as u64) < expected_length {
            return Err(FormatError::Truncated {
                what: "tables",
                needed: expected_length,
                available: tables.len() as u64,
            });
        }
        let tables = &tables[..as_usize(expected_length)];
        if location.version.major == 1 {
            return parse_v1(head, tables, file_length);
        }
        parse_v2(head, tables, &location, file_length)
    }

    /// The view of a directly opened safetensors file, sharded set or GGUF file
    /// (see [`crate::direct`]); [`ForeignModel::model`] calls this.
    pub fn foreign(model: &'a ForeignModel) -> Model<'a> {
        Model {
            data: None,
            file_length: model.length(),
            version: Version {
                major: model.version(),
                minor: 0,
            },
            inner: Inner::Foreign(model),
        }
    }

    /// The format version (for a directly opened file, its own format's: GGUF 2 or 3, safetensors 0).
    pub fn version(&self) -> Version {
        self.version
    }

    /// What kind of file this model was read from.
    pub fn kind(&self) -> FileKind {
        match &self.inner {
            Inner::V2 { .. } => FileKind::Tmai,
            Inner::V1 { .. } => FileKind::LegacyTmai,
            Inner::Foreign(model) => model.kind(),
        }
    }

    /// The directly opened file behind this view, if it is not a `.tmai` file.
    pub fn foreign_model(&self) -> Option<&'a ForeignModel> {
        match &self.inner {
            Inner::Foreign(model) => Some(model),
            _ => None,
        }
    }

    /// Whether this is a legacy TinyAI v1 file (read-only; no tensors, names or checksums).
    pub fn is_legacy(&self) -> bool {
        matches!(self.inner, Inner::V1 { .. })
    }

    /// The file length in bytes (for a sharded set, the length of its virtual byte space).
    pub fn file_length(&self) -> u64 {
        self.file_length
    }

    /// Layer alignment in bytes (1 for legacy v1 files and directly opened
    /// files, which have no alignment rule).
    pub fn alignment(&self) -> u64 {
        match &self.inner {
            Inner::V2 { alignment, .. } => *alignment,
            Inner::V1 { .. } | Inner::Foreign(_) => 1,
        }
    }

    /// Number of layers.
    pub fn layer_count(&self) -> u64 {
        match &self.inner {
            Inner::V2 { layers, .. } => layers.len() as u64,
            Inner::V1 { layers, .. } => layers.len() as u64,
            Inner::Foreign(model) => model.layers.len() as u64,
        }
    }

    /// Number of tensors (0 for v1).
    pub fn tensor_count(&self) -> u64 {
        match &self.inner {
            Inner::V2 { tensors, .. } => tensors.len() as u64,
            Inner::V1 { .. } => 0,
            Inner::Foreign(model) => model.tensors.entries.len() as u64,
        }
    }

    /// Describes layer `index`.
    pub fn layer(&self, index: u64) -> Result<LayerInfo<'a>, FormatError> {
        let count = self.layer_count();
        let out_of_range = FormatError::LayerIndexOutOfRange { index, count };
        match &self.inner {
            Inner::V2 {
                layers, strings, ..
            } => {
                let raw = layers.get(as_usize(index)).ok_or(out_of_range)?;
                Ok(v2_layer_info(index, raw, strings))
            }
            Inner::V1 { layers, .. } => {
                let raw = layers.get(as_usize(index)).ok_or(out_of_range)?;
                Ok(LayerInfo {
                    index,
                    name: None,
                    offset: u64::from(raw.offset.get()),
                    length: u64::from(raw.size.get()),
                    precision_bits: raw.precision.get(),
                    dtype: DType::Opaque,
                    checksum: None,
                    tensors: 0..0,
                })
            }
            Inner::Foreign(model) => {
                let layer = model.layers.get(as_usize(index)).ok_or(out_of_range)?;
                Ok(LayerInfo {
                    index,
                    name: Some(model.layer_name(layer)),
                    offset: layer.offset,
                    length: layer.length,
                    precision_bits: layer.precision_bits,
                    dtype: layer.dtype,
                    checksum: None,
                    tensors: layer.first_tensor..layer.first_tensor + layer.tensor_count,
                })
            }
        }
    }

    /// All layers in table order.
    pub fn layers(&self) -> impl Iterator<Item = LayerInfo<'a>> + '_ {
        (0..self.layer_count()).filter_map(|index| self.layer(index).ok())
    }

    /// Finds a layer by name (v2 only; linear scan).
    pub fn layer_by_name(&self, name: &str) -> Option<LayerInfo<'a>> {
        self.layers().find(|layer| layer.name == Some(name))
    }

    /// Describes tensor `index` of the tensor table.
    pub fn tensor(&self, index: u64) -> Option<TensorInfo<'a>> {
        if let Inner::Foreign(model) = &self.inner {
            let layer = model
                .layers
                .partition_point(|l| l.first_tensor + l.tensor_count <= index)
                as u64;
            return foreign_tensor_info(model, index, layer);
        }
        let Inner::V2 {
            tensors,
            strings,
            layers,
            ..
        } = &self.inner
        else {
            return None;
        };
        let raw = tensors.get(as_usize(index))?;
        // Layers own contiguous tensor ranges in order: find the owner by binary search.
        let layer =
            layers.partition_point(|l| l.first_tensor.get() + l.tensor_count.get() <= index) as u64;
        Some(tensor_info(index, layer, raw, strings))
    }

    /// The tensors of layer `layer`, in table order.
    pub fn layer_tensors(
        &self,
        layer: u64,
    ) -> Result<impl ExactSizeIterator<Item = TensorInfo<'a>> + '_, FormatError> {
        let info = self.layer(layer)?;
        let (tensors, strings, foreign): (&'a [RawTensor], &'a [u8], _) = match &self.inner {
            Inner::V2 {
                tensors, strings, ..
            } => (tensors, strings, None),
            Inner::V1 { .. } => (&[], &[], None),
            Inner::Foreign(model) => (&[], &[], Some(*model)),
        };
        let slice = tensors
            .get(as_usize(info.tensors.start)..as_usize(info.tensors.end))
            .unwrap_or(&[]);
        let table = slice
            .iter()
            .enumerate()
            .map(move |(i, raw)| tensor_info(info.tensors.start + i as u64, layer, raw, strings));
        let range = info.tensors.clone();
        let remaining = as_usize(range.end - range.start);
        let direct = foreign.into_iter().flat_map(move |model| {
            range
                .clone()
                .filter_map(move |index| foreign_tensor_info(model, index, layer))
        });
        Ok(Tensors {
            table,
            direct,
            remaining,
        })
    }

    /// Finds a tensor of layer `layer` by name.
    pub fn find_tensor(
        &self,
        layer: u64,
        name: &str,
    ) -> Result<Option<TensorInfo<'a>>, FormatError> {
        Ok(self
            .layer_tensors(layer)?
            .find(|tensor| tensor.name == name))
    }

    /// Metadata key/value pairs in table order.
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let (entries, strings, legacy_name): (&'a [RawMetadata], &'a [u8], Option<&'a str>) =
            match &self.inner {
                Inner::V2 {
                    metadata, strings, ..
                } => (metadata, strings, None),
                Inner::V1 { name, .. } => (&[], &[], Some(*name)),
                Inner::Foreign(_) => (&[], &[], None),
            };
        let direct: &'a [(String, String)] = match &self.inner {
            Inner::Foreign(model) => &model.metadata,
            _ => &[],
        };
        legacy_name
            .map(|name| ("general.name", name))
            .into_iter()
            .chain(direct.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain(entries.iter().map(move |entry| {
                (
                    str_at(strings, entry.key_offset.get(), entry.key_length.get()),
                    str_at(strings, entry.value_offset.get(), entry.value_length.get()),
                )
            }))
    }

    /// The value of metadata `key`, if present.
    pub fn metadata_value(&self, key: &str) -> Option<&'a str> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The bytes of layer `index` (only for models parsed with [`Model::parse`]).
    pub fn layer_bytes(&self, index: u64) -> Result<&'a [u8], FormatError> {
        let info = self.layer(index)?;
        let data = self.data.ok_or(FormatError::NoLayerData)?;
        data.get(as_usize(info.offset)..as_usize(info.offset + info.length))
            .ok_or(FormatError::NoLayerData)
    }

    /// Checks `bytes` (the layer's content, obtained however the caller likes)
    /// against layer `index`'s stored CRC-32C.
    pub fn verify_layer_bytes(&self, index: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.verify_layer_chunks(index, |sink| sink(bytes))
    }

    /// Verifies layer `index`'s checksum over its bytes as `feed` supplies
    /// them: `feed` calls the function it is given with consecutive chunks of
    /// the layer, in order (for callers that read the layer piecewise rather
    /// than holding it as one slice). Errors as
    /// [`verify_layer_bytes`](Self::verify_layer_bytes); fewer or more bytes
    /// than the layer's length are a mismatch.
    pub fn verify_layer_chunks(
        &self,
        index: u64,
        feed: impl FnOnce(&mut dyn FnMut(&[u8])),
    ) -> Result<(), FormatError> {
        let info = self.layer(index)?;
        let stored = info
            .checksum
            .ok_or(FormatError::NoChecksum { layer: index })?;
        let mut computed = 0u32;
        let mut length = 0u64;
        feed(&mut |chunk: &[u8]| {
            computed = crc32c::crc32c_append(computed, chunk);
            length += chunk.len() as u64;
        });
        if computed != stored || length != info.length {
            return Err(FormatError::ChecksumMismatch {
                layer: index,
                stored,
                computed,
                offset: info.offset,
                length: info.length,
            });
        }
        Ok(())
    }

    /// Verifies layer `index`'s checksum against the data this model was parsed from.
    pub fn verify_layer(&self, index: u64) -> Result<(), FormatError> {
        let bytes = self.layer_bytes(index)?;
        self.verify_layer_bytes(index, bytes)
    }

    /// Verifies every layer that has a checksum, in table order, and returns
    /// the first failure (a [`FormatError::ChecksumMismatch`], or any other
    /// error reading a layer). Only when all of those match does a layer
    /// without a checksum (every layer of a legacy v1 file) make it return
    /// [`FormatError::NoChecksum`] for the first such layer, so a layer without
    /// a checksum never hides corruption in the layers after it.
    pub fn verify_all(&self) -> Result<(), FormatError> {
        let mut first_unchecked = None;
        for index in 0..self.layer_count() {
            match self.verify_layer(index) {
                Ok(()) => {}
                Err(FormatError::NoChecksum { layer }) => {
                    first_unchecked.get_or_insert(layer);
                }
                Err(error) => return Err(error),
            }
        }
        match first_unchecked {
            Some(layer) => Err(FormatError::NoChecksum { layer }),
            None => Ok(()),
        }
    }
}

fn header_of(head: &[u8]) -> Result<&RawHeader, FormatError> {
    let bytes = head.get(..HEADER_SIZE).ok_or(FormatError::Truncated {
        what: "v2 header",
        needed: HEADER_SIZE as u64,
        available: head.len() as u64,
    })?;
    RawHeader::ref_from_bytes(bytes).map_err(|_| FormatError::Truncated {
        what: "v2 header",
        needed: HEADER_SIZE as u64,
        available: head.len() as u64,
    })
}

/// CRC-32C of a header: bytes `0..124` then `128..header_size`.
pub(crate) fn header_crc(header: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[..124]);
    crc32c::crc32c_append(crc, &header[128..])
}

fn str_at(strings: &[u8], offset: u64, length: u32) -> &str {
    strings
        .get(as_usize(offset)..as_usize(offset).saturating_add(length as usize))
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .unwrap_or("")
}

fn v2_layer_info<'a>(index: u64, raw: &RawLayer, strings: &'a [u8]) -> LayerInfo<'a> {
    let first = raw.first_tensor.get();
    LayerInfo {
        index,
        name: Some(str_at(
            strings,
            raw.name_offset.get(),
            raw.name_length.get(),
        )),
        offset: raw.offset.get(),
        length: raw.length.get(),
        precision_bits: u32::from(raw.precision_bits.get()),
        dtype: DType::from_code(raw.dtype.get()),
        checksum: (raw.flags.get() & LAYER_FLAG_HAS_CHECKSUM != 0).then(|| raw.checksum.get()),
        tensors: first..first + raw.tensor_count.get(),
    }
}

/// The tensors of one layer ([`Model::layer_tensors`]): from a tensor table, or
/// from a directly opened file's tensor list.
struct Tensors<A, B> {
    table: A,
    direct: B,
    remaining: usize,
}

impl<'a, A, B> Iterator for Tensors<A, B>
where
    A: Iterator<Item = TensorInfo<'a>>,
    B: Iterator<Item = TensorInfo<'a>>,
{
    type Item = TensorInfo<'a>;

    fn next(&mut self) -> Option<TensorInfo<'a>> {
        let next = self.table.next().or_else(|| self.direct.next());
        if next.is_some() {
            self.remaining = self.remaining.saturating_sub(1);
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<'a, A, B> ExactSizeIterator for Tensors<A, B>
where
    A: Iterator<Item = TensorInfo<'a>>,
    B: Iterator<Item = TensorInfo<'a>>,
{
}

fn foreign_tensor_info(model: &ForeignModel, index: u64, layer: u64) -> Option<TensorInfo<'_>> {
    let table = &model.tensors;
    let tensor = table.entries.get(as_usize(index))?;
    let owner = model.layers.get(as_usize(layer))?;
    let start = model.virtual_offset(tensor.file, tensor.start)?;
    let shape = table.shape(tensor);
    let mut dims = [0u64; 8];
    for (dim, &stored) in dims.iter_mut().zip(shape.iter()) {
        *dim = stored;
    }
    Some(TensorInfo {
        index,
        layer,
        name: table.name(tensor),
        dtype: tensor.dtype,
        source_type: tensor.source_type,
        rank: shape.len().min(8) as u16,
        dims,
        offset_in_layer: start - owner.offset,
        length: tensor.length(),
    })
}

fn tensor_info<'a>(index: u64, layer: u64, raw: &RawTensor, strings: &'a [u8]) -> TensorInfo<'a> {
    let mut dims = [0u64; 8];
    for (dim, stored) in dims.iter_mut().zip(raw.shape.iter()) {
        *dim = stored.get();
    }
    TensorInfo {
        index,
        layer,
        name: str_at(strings, raw.name_offset.get(), raw.name_length.get()),
        dtype: DType::from_code(raw.dtype.get()),
        source_type: raw.source_type.get(),
        rank: raw.rank.get().min(8),
        dims,
        offset_in_layer: raw.offset.get(),
        length: raw.length.get(),
    }
}

fn checked_str(
    strings: &[u8],
    offset: u64,
    length: u32,
    limit: u64,
    owner: impl Fn() -> StringOwner,
) -> Result<&str, FormatError> {
    let length = u64::from(length);
    if length > limit {
        return Err(FormatError::StringTooLong {
            owner: owner(),
            length,
            limit,
        });
    }
    let bytes = offset
        .checked_add(length)
        .filter(|&end| end <= strings.len() as u64)
        .map(|end| &strings[as_usize(offset)..as_usize(end)])
        .ok_or_else(|| FormatError::StringOutOfBounds {
            owner: owner(),
            offset,
            length,
            table_length: strings.len() as u64,
        })?;
    std::str::from_utf8(bytes).map_err(|error| FormatError::InvalidUtf8 {
        owner: owner(),
        valid_up_to: error.valid_up_to(),
    })
}

fn parse_v2<'a>(
    head: &'a [u8],
    tables: &'a [u8],
    location: &TableLocation,
    file_length: u64,
) -> Result<Model<'a>, FormatError> {
    let header = header_of(head)?;
    let computed = crc32c(tables);
    if computed != header.tables_crc32c.get() {
        return Err(FormatError::TablesChecksumMismatch {
            stored: header.tables_crc32c.get(),
            computed,
            start: location.tables.start,
            end: location.tables.end,
        });
    }
    let base = location.tables.start;
    let sub = |offset: u64| &tables[as_usize(offset - base)..];
    let truncated = |what| FormatError::Truncated {
        what,
        needed: location.tables.end,
        available: file_length,
    };
    let layers: &[RawLayer] = read_u64_table(
        sub(header.layer_table_offset.get()),
        header.layer_count.get(),
        LAYER_ENTRY_SIZE,
    )
    .ok_or_else(|| truncated("layer table"))?;
    let tensors: &[RawTensor] = read_u64_table(
        sub(header.tensor_table_offset.get()),
        header.tensor_count.get(),
        TENSOR_ENTRY_SIZE,
    )
    .ok_or_else(|| truncated("tensor table"))?;
    let metadata: &[RawMetadata] = read_u64_table(
        sub(header.metadata_table_offset.get()),
        header.metadata_count.get(),
        METADATA_ENTRY_SIZE,
    )
    .ok_or_else(|| truncated("metadata table"))?;
    let strings = sub(header.string_table_offset.get())
        .get(..as_usize(header.string_table_length.get()))
        .ok_or_else(|| truncated("string table"))?;
    let alignment = header.alignment.get();
    let version = location.version;
    let tolerate_unknown_dtypes = version.minor > MINOR_VERSION;

    validate_metadata(metadata, strings)?;
    let regions = [
        (0, location.header_length),
        (location.tables.start, location.tables.end),
    ];
    let mut names: FastMap<&str, u64> =
        FastMap::with_capacity_and_hasher(layers.len(), Default::default());
    let mut tensor_names: FastMap<&str, ()> = FastMap::default();
    let mut seen_in_layer: Vec<&str> = Vec::new();
    let mut previous_end: Option<(u64, u64)> = None;
    let mut expected_first = 0u64;
    for (index, raw) in layers.iter().enumerate() {
        let index = index as u64;
        let offset = raw.offset.get();
        let length = raw.length.get();
        let end = offset
            .checked_add(length)
            .ok_or(FormatError::LayerOverflow {
                layer: index,
                offset,
                length,
            })?;
        if end > file_length {
            return Err(FormatError::LayerOutOfBounds {
                layer: index,
                offset,
                end,
                file_length,
            });
        }
        if offset % alignment != 0 {
            return Err(FormatError::MisalignedLayer {
                layer: index,
                offset,
                alignment,
            });
        }
        for (region_start, region_end) in regions {
            // Half-open ranges: a layer with bytes intersects a region when the ranges
            // share a byte; a zero-length layer when its offset lies strictly inside the
            // region (so an empty last layer may sit where the table region starts,
            // which is where the writer puts it).
            let overlaps = if length == 0 {
                region_start < offset && offset < region_end
            } else {
                offset < region_end && end > region_start
            };
            if overlaps {
                return Err(FormatError::LayerOverlapsTables {
                    layer: index,
                    offset,
                    end,
                    region_start,
                    region_end,
                });
            }
        }
        if let Some((previous, previous_end)) = previous_end
            && offset < previous_end
        {
            return Err(FormatError::LayerOverlap {
                layer: index,
                offset,
                previous,
                previous_end,
            });
        }
        previous_end = Some((index, end));
        let precision = raw.precision_bits.get();
        if !(1..=64).contains(&precision) {
            return Err(FormatError::InvalidPrecision {
                layer: index,
                bits: u32::from(precision),
            });
        }
        let dtype = DType::from_code(raw.dtype.get());
        if matches!(dtype, DType::Unknown(_)) && !tolerate_unknown_dtypes {
            return Err(FormatError::UnknownDType {
                what: "layer",
                index,
                code: raw.dtype.get(),
            });
        }
        let name = checked_str(
            strings,
            raw.name_offset.get(),
            raw.name_length.get(),
            limits::MAX_NAME_LENGTH,
            || StringOwner::LayerName(index),
        )?;
        if let Some(&first) = names.get(name) {
            return Err(FormatError::DuplicateLayerName {
                layer: index,
                first,
                name: name.to_owned(),
            });
        }
        names.insert(name, index);

        let first = raw.first_tensor.get();
        let count = raw.tensor_count.get();
        let tensor_end = first.checked_add(count);
        let tensor_range_ok = first == expected_first
            && tensor_end.is_some_and(|tensor_end| tensor_end <= tensors.len() as u64);
        if !tensor_range_ok {
            return Err(FormatError::TensorRangeInvalid {
                layer: index,
                first,
                count,
                expected_first,
                tensor_count: tensors.len() as u64,
            });
        }
        expected_first = first + count;
        tensor_names.clear();
        seen_in_layer.clear();
        // Small layers (the common case) check duplicate names by comparison.
        let small_layer = count <= 16;
        for tensor_index in first..first + count {
            let tensor = &tensors[as_usize(tensor_index)];
            let name = validate_tensor(
                tensor_index,
                index,
                tensor,
                strings,
                length,
                tolerate_unknown_dtypes,
            )?;
            let duplicate = if small_layer {
                let duplicate = seen_in_layer.contains(&name);
                seen_in_layer.push(name);
                duplicate
            } else {
                tensor_names.insert(name, ()).is_some()
            };
            if duplicate {
                return Err(FormatError::DuplicateTensorName {
                    tensor: tensor_index,
                    layer: index,
                    name: name.to_owned(),
                });
            }
        }
    }
    if expected_first != tensors.len() as u64 {
        return Err(FormatError::OrphanTensors {
            referenced: expected_first,
            tensor_count: tensors.len() as u64,
        });
    }
    Ok(Model {
        data: None,
        file_length,
        version,
        inner: Inner::V2 {
            alignment,
            layers,
            tensors,
            metadata,
            strings,
        },
    })
}

fn validate_metadata(metadata: &[RawMetadata], strings: &[u8]) -> Result<(), FormatError> {
    let mut keys: FastMap<&str, ()> =
        FastMap::with_capacity_and_hasher(metadata.len(), Default::default());
    for (entry_index, entry) in metadata.iter().enumerate() {
        let entry_index = entry_index as u64;
        let key = checked_str(
            strings,
            entry.key_offset.get(),
            entry.key_length.get(),
            limits::MAX_NAME_LENGTH,
            || StringOwner::MetadataKey(entry_index),
        )?;
        checked_str(
            strings,
            entry.value_offset.get(),
            entry.value_length.get(),
            limits::MAX_METADATA_VALUE_LENGTH,
            || StringOwner::MetadataValue(entry_index),
        )?;
        if keys.insert(key, ()).is_some() {
            return Err(FormatError::DuplicateMetadataKey {
                entry: entry_index,
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

fn validate_tensor<'a>(
    tensor_index: u64,
    layer: u64,
    raw: &RawTensor,
    strings: &'a [u8],
    layer_length: u64,
    tolerate_unknown_dtypes: bool,
) -> Result<&'a str, FormatError> {
    let name = checked_str(
        strings,
        raw.name_offset.get(),
        raw.name_length.get(),
        limits::MAX_NAME_LENGTH,
        || StringOwner::TensorName(tensor_index),
    )?;
    let offset = raw.offset.get();
    let length = raw.length.get();
    if offset
        .checked_add(length)
        .is_none_or(|end| end > layer_length)
    {
        return Err(FormatError::TensorOutOfLayer {
            tensor: tensor_index,
            layer,
            offset,
            length,
            layer_length,
        });
    }
    let rank = raw.rank.get();
    if rank > 8 || raw.shape[usize::from(rank)..].iter().any(|d| d.get() != 0) {
        return Err(FormatError::InvalidRank {
            tensor: tensor_index,
            rank,
        });
    }
    let dtype = DType::from_code(raw.dtype.get());
    match dtype {
        DType::Unknown(code) if !tolerate_unknown_dtypes => {
            return Err(FormatError::UnknownDType {
                what: "tensor",
                index: tensor_index,
                code,
            });
        }
        DType::Mixed => {
            return Err(FormatError::UnknownDType {
                what: "tensor",
                index: tensor_index,
                code: raw.dtype.get(),
            });
        }
        _ => {}
    }
    let dims = &raw.shape[..usize::from(rank)];
    let element_count = dims
        .iter()
        .try_fold(1u128, |acc, d| acc.checked_mul(u128::from(d.get())));
    let expected = match element_count {
        Some(count) => expected_byte_length(dtype, raw.source_type.get(), count),
        None => Some(u128::MAX),
    };
    if let Some(expected) = expected
        && expected != u128::from(length)
    {
        return Err(FormatError::TensorSizeMismatch {
            tensor: tensor_index,
            dtype,
            shape: dims.iter().map(|d| d.get()).collect(),
            expected,
            actual: length,
        });
    }
    Ok(name)
}

fn locate_v1(head: &[u8], file_length: u64) -> Result<TableLocation, FormatError> {
    let header_bytes = head.get(..V1_HEADER_SIZE).ok_or(FormatError::Truncated {
        what: "legacy v1 header",
        needed: V1_HEADER_SIZE as u64,
        available: head.len() as u64,
    })?;
    let header = RawV1Header::ref_from_bytes(header_bytes).map_err(|_| FormatError::Truncated {
        what: "legacy v1 header",
        needed: V1_HEADER_SIZE as u64,
        available: head.len() as u64,
    })?;
    if header.version.get() != 1 {
        return Err(FormatError::UnsupportedVersion {
            major: header.version.get(),
            minor: 0,
        });
    }
    let count = u64::from(header.layer_count.get());
    let table_length = count * V1_LAYER_ENTRY_SIZE as u64;
    let end = V1_HEADER_SIZE as u64 + table_length;
    if end > file_length {
        // A count whose table cannot fit is absurd rather than a short read.
        if table_length > file_length {
            return Err(FormatError::AbsurdCount {
                table: Table::Layers,
                count,
                entry_size: V1_LAYER_ENTRY_SIZE as u64,
                file_length,
            });
        }
        return Err(FormatError::Truncated {
            what: "legacy v1 layer table",
            needed: end,
            available: file_length,
        });
    }
    Ok(TableLocation {
        version: Version { major: 1, minor: 0 },
        header_length: V1_HEADER_SIZE as u64,
        tables: V1_HEADER_SIZE as u64..end,
    })
}

fn parse_v1<'a>(
    head: &'a [u8],
    tables: &'a [u8],
    file_length: u64,
) -> Result<Model<'a>, FormatError> {
    let header = RawV1Header::ref_from_bytes(&head[..V1_HEADER_SIZE]).map_err(|_| {
        FormatError::Truncated {
            what: "legacy v1 header",
            needed: V1_HEADER_SIZE as u64,
            available: head.len() as u64,
        }
    })?;
    let name_length = header.name.iter().position(|&b| b == 0).unwrap_or(64);
    let name = std::str::from_utf8(&header.name[..name_length]).map_err(|error| {
        FormatError::InvalidUtf8 {
            owner: StringOwner::LegacyModelName,
            valid_up_to: error.valid_up_to(),
        }
    })?;
    let layers: &[RawV1Layer] = read_u64_table(
        tables,
        u64::from(header.layer_count.get()),
        V1_LAYER_ENTRY_SIZE,
    )
    .ok_or(FormatError::Truncated {
        what: "legacy v1 layer table",
        needed: tables.len() as u64,
        available: file_length,
    })?;
    let table_end = V1_HEADER_SIZE as u64 + tables.len() as u64;
    let mut order: Vec<(u64, u64, u64)> = Vec::with_capacity(layers.len());
    for (index, raw) in layers.iter().enumerate() {
        let index = index as u64;
        let offset = u64::from(raw.offset.get());
        let length = u64::from(raw.size.get());
        // u32 + u32 cannot overflow u64, but the C reader computed it in 32 bits.
        let end = offset + length;
        if end > u64::from(u32::MAX) {
            return Err(FormatError::LayerOverflow {
                layer: index,
                offset,
                length,
            });
        }
        if end > file_length {
            return Err(FormatError::LayerOutOfBounds {
                layer: index,
                offset,
                end,
                file_length,
            });
        }
        // As in v2: a zero-length layer clashes only when strictly inside the region.
        let overlaps = if length == 0 {
            0 < offset && offset < table_end
        } else {
            offset < table_end
        };
        if overlaps {
            return Err(FormatError::LayerOverlapsTables {
                layer: index,
                offset,
                end,
                region_start: 0,
                region_end: table_end,
            });
        }
        let precision = raw.precision.get();
        if !(1..=64).contains(&precision) {
            return Err(FormatError::InvalidPrecision {
                layer: index,
                bits: precision,
            });
        }
        order.push((offset, end, index));
    }
    order.sort_unstable();
    for pair in order.windows(2) {
        let (_, previous_end, previous) = pair[0];
        let (offset, _, layer) = pair[1];
        if offset < previous_end {
            return Err(FormatError::LayerOverlap {
                layer,
                offset,
                previous,
                previous_end,
            });
        }
    }
    Ok(Model {
        data: None,
        file_length,
        version: Version { major: 1, minor: 0 },
        inner: Inner::V1 { name, layers },
    })
}

/// Location of the header and tables for callers that only have `head` bytes; see [`Model::locate_tables`].
pub fn locate_tables(head: &[u8], file_length: u64) -> Result<TableLocation, FormatError> {
    Model::locate_tables(head, file_length)
}
