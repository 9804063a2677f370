//! What the direct readers of other formats ([`crate::safetensors`], [`crate::gguf`])
//! present: tensors with absolute byte ranges, and layers made of them by the
//! shared [`crate::grouping`] rules.
//!
//! Unlike a `.tmai` layer, a layer of a safetensors or GGUF file is not a
//! page-aligned run of its own: it is the byte range that covers its tensors,
//! which may start and end anywhere, may share a page with a neighbouring layer,
//! and may contain bytes of other layers' tensors or padding between its own
//! tensors ([`LayerSpan::contiguous`] says whether it does). A layer of a sharded
//! safetensors set has one span per shard it touches.
//!
//! # Example: reading a header on demand
//! The parsers do no I/O; a caller reads the first bytes of the file and reads
//! more when asked ([`SourceError::NeedMoreBytes`](crate::SourceError::NeedMoreBytes)).
//! ```
//! use tinyai_format::{GgufHeader, Grouping, SourceError, group_layers};
//! # fn main() -> Result<(), SourceError> {
//! // A GGUF v3 file with no metadata and one 4-element f32 tensor.
//! let mut file = b"GGUF".to_vec();
//! file.extend_from_slice(&3u32.to_le_bytes()); // version
//! file.extend_from_slice(&1u64.to_le_bytes()); // tensor count
//! file.extend_from_slice(&0u64.to_le_bytes()); // metadata count
//! file.extend_from_slice(&(b"blk.0.w".len() as u64).to_le_bytes());
//! file.extend_from_slice(b"blk.0.w");
//! file.extend_from_slice(&1u32.to_le_bytes()); // dimensions
//! file.extend_from_slice(&4u64.to_le_bytes()); // ne[0]
//! file.extend_from_slice(&0u32.to_le_bytes()); // GGML type F32
//! file.extend_from_slice(&0u64.to_le_bytes()); // offset in the data area
//! file.resize(64 + 16, 0); // data area at 64 (alignment 32), 16 bytes
//!
//! let mut given = 16; // e.g. 64 KiB in real use
//! let header = loop {
//!     match GgufHeader::parse(&file[..given], file.len() as u64) {
//!         Err(SourceError::NeedMoreBytes { needed, .. }) => given = needed as usize,
//!         other => break other?,
//!     }
//! };
//! assert_eq!((header.data_start, header.tensors[0].start, header.tensors[0].end), (64, 64, 80));
//! let layers = group_layers(&header.tensors, &Grouping::Default);
//! assert_eq!(layers[0].name, "layer.0");
//! assert_eq!((layers[0].spans[0].start, layers[0].spans[0].contiguous), (64, true));
//! # Ok(()) }
//! ```

use crate::DType;
use crate::grouping::{Grouping, plan};

/// One tensor of a safetensors or GGUF file, as its header describes it, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignTensor {
    /// Full original name.
    pub name: String,
    /// Element type ([`DType::Ggml`] for GGML types with no plain equivalent).
    pub dtype: DType,
    /// GGML type id for [`DType::Ggml`], else 0.
    pub source_type: u32,
    /// Dimensions, outermost first (GGUF's innermost-first order is reversed).
    pub shape: Vec<u64>,
    /// Which file of the set holds it (0 for a single file; the shard index for a sharded set).
    pub file: usize,
    /// Absolute offset of its first byte in that file.
    pub start: u64,
    /// Absolute offset one past its last byte (`start + length`, checked).
    pub end: u64,
}

impl ForeignTensor {
    /// Length in bytes.
    pub fn length(&self) -> u64 {
        self.end - self.start
    }
}

/// Tensors held compactly, as a directly opened model keeps them: every name in
/// one string and every shape in one array, each tensor referring to its own by
/// range (no allocation per tensor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TensorTable {
    pub(crate) names: String,
    pub(crate) shapes: Vec<u64>,
    pub(crate) entries: Vec<TableTensor>,
}

/// One tensor of a [`TensorTable`]: a [`ForeignTensor`] whose name and shape are
/// ranges of the table's `names` and `shapes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TableTensor {
    pub(crate) name_start: usize,
    pub(crate) name_end: usize,
    pub(crate) shape_start: usize,
    pub(crate) shape_end: usize,
    pub(crate) dtype: DType,
    pub(crate) source_type: u32,
    pub(crate) file: usize,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl TableTensor {
    /// Length in bytes.
    pub(crate) fn length(&self) -> u64 {
        self.end - self.start
    }
}

impl TensorTable {
    /// An empty table with room for about `tensors` tensors of `name_bytes` of names.
    pub(crate) fn with_capacity(tensors: usize, name_bytes: usize) -> TensorTable {
        TensorTable {
            names: String::with_capacity(name_bytes),
            shapes: Vec::with_capacity(tensors),
            entries: Vec::with_capacity(tensors),
        }
    }

    /// Appends a tensor (`start..end` absolute in file `file`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn push(
        &mut self,
        name: &str,
        dtype: DType,
        source_type: u32,
        shape: &[u64],
        file: usize,
        start: u64,
        end: u64,
    ) {
        let name_start = self.names.len();
        self.names.push_str(name);
        let shape_start = self.shapes.len();
        // Element by element: shapes are short, not worth a call to memcpy.
        self.shapes.extend(shape.iter().copied());
        self.entries.push(TableTensor {
            name_start,
            name_end: self.names.len(),
            shape_start,
            shape_end: self.shapes.len(),
            dtype,
            source_type,
            file,
            start,
            end,
        });
    }

    /// The name of `tensor`, an entry of this table.
    pub(crate) fn name(&self, tensor: &TableTensor) -> &str {
        self.names
            .get(tensor.name_start..tensor.name_end)
            .unwrap_or_default()
    }

    /// The shape of `tensor`, an entry of this table.
    pub(crate) fn shape(&self, tensor: &TableTensor) -> &[u64] {
        self.shapes
            .get(tensor.shape_start..tensor.shape_end)
            .unwrap_or_default()
    }

    /// `tensor` as an owned [`ForeignTensor`].
    pub(crate) fn to_foreign(&self, tensor: &TableTensor) -> ForeignTensor {
        ForeignTensor {
            name: self.name(tensor).to_owned(),
            dtype: tensor.dtype,
            source_type: tensor.source_type,
            shape: self.shape(tensor).to_vec(),
            file: tensor.file,
            start: tensor.start,
            end: tensor.end,
        }
    }

    /// The table of `tensors`, in their order.
    pub(crate) fn of(tensors: &[ForeignTensor]) -> TensorTable {
        let mut table = TensorTable::with_capacity(
            tensors.len(),
            tensors.iter().map(|tensor| tensor.name.len()).sum(),
        );
        for tensor in tensors {
            table.push(
                &tensor.name,
                tensor.dtype,
                tensor.source_type,
                &tensor.shape,
                tensor.file,
                tensor.start,
                tensor.end,
            );
        }
        table
    }
}

/// The bytes a layer covers in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpan {
    /// Which file of the set.
    pub file: usize,
    /// Absolute start of the first of the layer's tensors in that file.
    pub start: u64,
    /// Absolute end of the last of them.
    pub end: u64,
    /// Bytes of the layer's own tensors inside `start..end`.
    pub tensor_bytes: u64,
    /// Whether the layer's tensors fill `start..end` exactly (no padding, no other layer's tensors in between).
    pub contiguous: bool,
}

/// A layer of a directly opened file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignLayer {
    /// Layer name, as `tmai convert` would name it.
    pub name: String,
    /// Indices into the tensor list, in source order.
    pub tensors: Vec<usize>,
    /// The covering byte range per file, in file order (one span unless the layer spans shards).
    pub spans: Vec<LayerSpan>,
}

/// Groups `tensors` (in source order) into layers with the rules `tmai convert` uses,
/// in the order the converter writes them, each with its covering byte ranges.
///
/// The tensors must not overlap within a file (the readers check that).
pub fn group_layers(tensors: &[ForeignTensor], grouping: &Grouping) -> Vec<ForeignLayer> {
    let names: Vec<&str> = tensors.iter().map(|tensor| tensor.name.as_str()).collect();
    let place = |tensor: &ForeignTensor| (tensor.file, tensor.start, tensor.end);
    plan(&names, grouping)
        .into_iter()
        .map(|layer| {
            // Source order is mostly file order already: sort only if not.
            let in_order = layer
                .tensors
                .windows(2)
                .all(|pair| place(&tensors[pair[0]]) <= place(&tensors[pair[1]]));
            let spans = if in_order {
                spans_of(layer.tensors.iter().map(|&index| &tensors[index]))
            } else {
                let mut members: Vec<&ForeignTensor> =
                    layer.tensors.iter().map(|&index| &tensors[index]).collect();
                members.sort_by_key(|tensor| place(tensor));
                spans_of(members.into_iter())
            };
            ForeignLayer {
                name: layer.name,
                tensors: layer.tensors,
                spans,
            }
        })
        .collect()
}

/// The spans covering `members`, given in (file, start, end) order.
fn spans_of<'a>(members: impl Iterator<Item = &'a ForeignTensor>) -> Vec<LayerSpan> {
    let mut spans: Vec<LayerSpan> = Vec::with_capacity(1);
    for tensor in members {
        match spans.last_mut() {
            Some(span) if span.file == tensor.file => {
                span.contiguous &= tensor.start == span.end;
                span.end = span.end.max(tensor.end);
                span.tensor_bytes += tensor.length();
            }
            _ => spans.push(LayerSpan {
                file: tensor.file,
                start: tensor.start,
                end: tensor.end,
                tensor_bytes: tensor.length(),
                contiguous: true,
            }),
        }
    }
    spans
}

/// Elements in `shape` (`None` on overflow of `u128`).
pub(crate) fn element_count(shape: &[u64]) -> Option<u128> {
    shape.iter().try_fold(1u128, |count, &dimension| {
        count.checked_mul(u128::from(dimension))
    })
}

/// Test support: a `u8` tensor of file `file` covering `start..end`.
#[cfg(test)]
pub(crate) fn test_tensor(name: &str, file: usize, start: u64, end: u64) -> ForeignTensor {
    ForeignTensor {
        name: name.to_owned(),
        dtype: DType::U8,
        source_type: 0,
        shape: vec![end - start],
        file,
        start,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::test_tensor as tensor;
    use super::*;

    #[test]
    fn spans_cover_tensors_and_say_when_they_are_interleaved() {
        let tensors = [
            tensor("layers.0.a", 0, 100, 110),
            tensor("layers.1.a", 0, 110, 130),
            tensor("layers.0.b", 0, 130, 131),
            tensor("layers.1.b", 0, 131, 140),
            tensor("layers.1.c", 1, 8, 16),
            tensor("embed.w", 0, 10, 20),
        ];
        let layers = group_layers(&tensors, &Grouping::Default);
        let names: Vec<&str> = layers.iter().map(|layer| layer.name.as_str()).collect();
        assert_eq!(names, ["embed", "layer.0", "layer.1"]);
        assert_eq!(
            layers[0].spans,
            [LayerSpan {
                file: 0,
                start: 10,
                end: 20,
                tensor_bytes: 10,
                contiguous: true
            }]
        );
        assert_eq!(
            layers[1].spans,
            [LayerSpan {
                file: 0,
                start: 100,
                end: 131,
                tensor_bytes: 11,
                contiguous: false
            }]
        );
        assert_eq!(layers[2].tensors, [1, 3, 4]);
        assert_eq!(
            layers[2].spans,
            [
                LayerSpan {
                    file: 0,
                    start: 110,
                    end: 140,
                    tensor_bytes: 29,
                    contiguous: false
                },
                LayerSpan {
                    file: 1,
                    start: 8,
                    end: 16,
                    tensor_bytes: 8,
                    contiguous: true
                }
            ]
        );
    }
}

/// What a file holds, judged by its first bytes (never by its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A current-version `.tmai` file.
    Tmai,
    /// A legacy TinyAI v1 file.
    LegacyTmai,
    /// A safetensors file.
    Safetensors,
    /// A sharded safetensors set's index (`model.safetensors.index.json`).
    SafetensorsIndex,
    /// A GGUF file (llama.cpp).
    Gguf,
    /// None of these.
    Unknown,
}

impl FileKind {
    /// A short description for messages ("a safetensors file", ...).
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Tmai => "a .tmai file",
            FileKind::LegacyTmai => "a legacy TinyAI v1 file",
            FileKind::Safetensors => "a safetensors file",
            FileKind::SafetensorsIndex => "a sharded safetensors index (JSON)",
            FileKind::Gguf => "a GGUF file",
            FileKind::Unknown => "an unrecognised file",
        }
    }
}

/// Detects what a file holds from its first bytes `head` (64 are enough)
/// and its length, in this order:
/// - `GGUF`: GGUF;
/// - the `.tmai` v2 magic, then the legacy v1 magic (`49 41 4D 54`);
/// - a little-endian `u64` header length that fits the file, then `{`: safetensors;
/// - a first non-blank byte `{`: a safetensors index;
/// - `{` as the 9th byte (a safetensors file whose header length is wrong:
///   its parser says what is wrong);
/// - otherwise [`FileKind::Unknown`].
#[must_use]
pub fn detect(head: &[u8], file_length: u64) -> FileKind {
    if head.starts_with(&crate::gguf::MAGIC) {
        return FileKind::Gguf;
    }
    if head.starts_with(&crate::raw::MAGIC_V2) {
        return FileKind::Tmai;
    }
    if head.starts_with(&crate::raw::MAGIC_V1) {
        return FileKind::LegacyTmai;
    }
    let brace_ninth = head.len() >= 9 && head[8] == b'{';
    if brace_ninth {
        let mut length = [0u8; 8];
        length.copy_from_slice(&head[..8]);
        if u64::from_le_bytes(length) <= file_length.saturating_sub(8) {
            return FileKind::Safetensors;
        }
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return FileKind::SafetensorsIndex;
    }
    if brace_ninth {
        return FileKind::Safetensors;
    }
    FileKind::Unknown
}

#[cfg(test)]
mod detect_tests {
    use super::{FileKind, detect};

    #[test]
    fn files_are_told_apart_by_their_first_bytes() {
        let mut safetensors = 20u64.to_le_bytes().to_vec();
        safetensors.extend_from_slice(b"{\"a\":{}}           ");
        assert_eq!(detect(&safetensors, 28), FileKind::Safetensors);
        // A header length past the end: still safetensors (its parser says why it is bad).
        assert_eq!(detect(&safetensors, 10), FileKind::Safetensors);
        assert_eq!(
            detect(b"  {\"weight_map\": {}}", 20),
            FileKind::SafetensorsIndex
        );
        assert_eq!(detect(b"GGUF\x03\0\0\0", 1000), FileKind::Gguf);
        assert_eq!(detect(b"TMAI\r\n\x1a\n....", 1000), FileKind::Tmai);
        assert_eq!(
            detect(&[0x49, 0x41, 0x4D, 0x54, 1], 1000),
            FileKind::LegacyTmai
        );
        assert_eq!(detect(b"hello world", 11), FileKind::Unknown);
        assert_eq!(detect(b"", 0), FileKind::Unknown);
    }
}
