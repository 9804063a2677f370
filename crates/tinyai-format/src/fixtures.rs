//! Deterministic fixture models for tests, benchmarks and `cargo xtask fixtures`.
//!
//! Every byte of a fixture is a function of a seed, so a test anywhere (store,
//! FFI, CLI) can recompute what a layer must contain instead of keeping a copy:
//!
//! - in a v2 fixture, the byte at position `p` of layer `l` that belongs to a
//!   tensor is [`fixture_byte`]`(seed, l, p)`; padding between tensors is zero.
//!   [`check_layer_bytes`] checks a layer against that rule using only the
//!   model's tensor table, and [`expected_layer_bytes`] rebuilds a whole layer;
//! - a legacy v1 fixture ([`write_legacy_v1`]) fills its layers with a caller's
//!   function; the presets fill layer `i` with the byte `i`, as the original
//!   TinyAI C test generator did.
//!
//! Layer data is generated lazily and written in chunks: writing a
//! multi-gigabyte [`large`] fixture needs a few megabytes of memory.

use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::DType;
use crate::dtype::expected_byte_length;
use crate::error::FormatError;
use crate::limits::TENSOR_ALIGNMENT;
use crate::raw::{MAGIC_V1, V1_HEADER_SIZE, V1_LAYER_ENTRY_SIZE};
use crate::reader::Model;
use crate::writer::{FileWriter, TensorSpec, Writer, WriterOptions};

/// GGML type id of `Q4_0` (32 weights in 18 bytes).
pub const GGML_Q4_0: u32 = 2;

/// Size of the chunks in which fixture data is generated and written.
const CHUNK_SIZE: usize = 1 << 20;

/// The SplitMix64 finaliser: a cheap, well-mixing 64-bit hash.
pub fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key of one layer of one seed; bytes of the layer are derived from it.
fn layer_key(seed: u64, layer: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ layer.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// The fixture byte at position `index` of layer `layer` of a model seeded with `seed`.
///
/// Defined as byte `index % 8` (little-endian) of
/// `splitmix64(layer_key(seed, layer) ^ (index / 8))`, where
/// `layer_key(seed, layer) = splitmix64(splitmix64(seed) ^ layer * 0xD6E8FEB86659FD93)`
/// (wrapping arithmetic).
pub fn fixture_byte(seed: u64, layer: u64, index: u64) -> u8 {
    let word = splitmix64(layer_key(seed, layer) ^ (index / 8));
    word.to_le_bytes()[(index % 8) as usize]
}

/// Fills `buffer` with the fixture bytes `start..start + buffer.len()` of a layer
/// (the same values as [`fixture_byte`], computed eight at a time).
pub fn fill_fixture_bytes(seed: u64, layer: u64, start: u64, buffer: &mut [u8]) {
    let key = layer_key(seed, layer);
    let mut position = start;
    let mut filled = 0;
    while filled < buffer.len() {
        let word = splitmix64(key ^ (position / 8)).to_le_bytes();
        let within = (position % 8) as usize;
        let take = (8 - within).min(buffer.len() - filled);
        buffer[filled..filled + take].copy_from_slice(&word[within..within + take]);
        filled += take;
        position += take as u64;
    }
}

/// A [`Read`] that produces the fixture bytes of one layer lazily, `length` bytes
/// starting at layer position `start`.
#[derive(Clone, Debug)]
pub struct FixtureReader {
    seed: u64,
    layer: u64,
    position: u64,
    end: u64,
}

impl FixtureReader {
    /// Bytes `start..start + length` of layer `layer` of seed `seed`.
    pub fn new(seed: u64, layer: u64, start: u64, length: u64) -> Self {
        FixtureReader {
            seed,
            layer,
            position: start,
            end: start.saturating_add(length),
        }
    }
}

impl Read for FixtureReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let remaining = self.end - self.position;
        let count = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        fill_fixture_bytes(self.seed, self.layer, self.position, &mut buffer[..count]);
        self.position += count as u64;
        Ok(count)
    }
}

/// One tensor of a fixture layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureTensor {
    /// Name, unique within the layer.
    pub name: String,
    /// Element type (not mixed or unknown).
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// GGML type id for [`DType::Ggml`], otherwise 0.
    pub source_type: u32,
}

impl FixtureTensor {
    /// A tensor of a plain dtype.
    pub fn new(name: &str, dtype: DType, shape: &[u64]) -> Self {
        FixtureTensor {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            source_type: 0,
        }
    }

    /// A GGML tensor of type id `ggml_type` (e.g. [`GGML_Q4_0`]).
    pub fn ggml(name: &str, ggml_type: u32, shape: &[u64]) -> Self {
        FixtureTensor {
            name: name.to_owned(),
            dtype: DType::Ggml,
            shape: shape.to_vec(),
            source_type: ggml_type,
        }
    }

    /// Byte length implied by dtype and shape (opaque tensors: the product of the shape).
    pub fn byte_length(&self) -> Result<u64, FormatError> {
        let element_count = self
            .shape
            .iter()
            .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)));
        let length = element_count.and_then(|count| {
            expected_byte_length(self.dtype, self.source_type, count).or(match self.dtype {
                DType::Opaque => Some(count),
                _ => None,
            })
        });
        length
            .and_then(|length| u64::try_from(length).ok())
            .ok_or_else(|| FormatError::InvalidTensorSpec {
                name: self.name.clone(),
                reason: format!(
                    "fixture tensor of dtype {} and shape {:?} has no defined byte length",
                    self.dtype, self.shape
                ),
            })
    }

    fn spec(&self) -> TensorSpec<'_> {
        TensorSpec {
            name: &self.name,
            dtype: self.dtype,
            shape: &self.shape,
            source_type: self.source_type,
        }
    }
}

/// One layer of a fixture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureLayer {
    /// Name, unique among layers.
    pub name: String,
    /// Its tensors, in order (may be empty: a zero-length layer).
    pub tensors: Vec<FixtureTensor>,
}

/// A deterministic v2 fixture model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureSpec {
    /// Seed of the content ([`fixture_byte`]).
    pub seed: u64,
    /// Layer alignment written into the file.
    pub alignment: u64,
    /// Metadata key/value pairs, in order.
    pub metadata: Vec<(String, String)>,
    /// The layers, in order.
    pub layers: Vec<FixtureLayer>,
}

impl FixtureSpec {
    /// A model of `layer_sizes.len()` layers named `layers.{i}`, each holding
    /// `tensors_per_layer` `u8` tensors that split the layer's size (a layer of
    /// size 0 has one empty tensor; `tensors_per_layer` 0 is treated as 1).
    pub fn uniform(seed: u64, alignment: u64, layer_sizes: &[u64], tensors_per_layer: u64) -> Self {
        let tensors_per_layer = tensors_per_layer.max(1);
        let layers = layer_sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                let base = size / tensors_per_layer;
                let tensors = (0..tensors_per_layer)
                    .map(|t| {
                        let extra = if t + 1 == tensors_per_layer {
                            size % tensors_per_layer
                        } else {
                            0
                        };
                        FixtureTensor::new(&format!("t{t}"), DType::U8, &[base + extra])
                    })
                    .collect();
                FixtureLayer {
                    name: format!("layers.{index}"),
                    tensors,
                }
            })
            .collect();
        FixtureSpec {
            seed,
            alignment,
            metadata: vec![("general.name".to_owned(), format!("uniform-{seed}"))],
            layers,
        }
    }

    /// Sum of the tensor bytes of all layers (excluding padding).
    pub fn data_bytes(&self) -> Result<u64, FormatError> {
        let mut total = 0u64;
        for layer in &self.layers {
            for tensor in &layer.tensors {
                total = total.saturating_add(tensor.byte_length()?);
            }
        }
        Ok(total)
    }
}

/// A few small layers, one `f32` tensor each; alignment 64; seed 1.
pub fn tiny() -> FixtureSpec {
    let layer = |name: &str, shape: &[u64]| FixtureLayer {
        name: name.to_owned(),
        tensors: vec![FixtureTensor::new("weight", DType::F32, shape)],
    };
    FixtureSpec {
        seed: 1,
        alignment: 64,
        metadata: vec![("general.name".to_owned(), "tiny".to_owned())],
        layers: vec![
            layer("layers.0", &[4, 4]),
            layer("layers.1", &[8]),
            layer("layers.2", &[2, 3]),
        ],
    }
}

/// Several tensors per layer of many dtypes (including a GGML `Q4_0` tensor, a
/// scalar, packed `i4` and an opaque blob), an empty layer in the middle,
/// metadata `general.name` / `general.architecture` and a non-ASCII value;
/// alignment 64; seed 2.
pub fn multi_tensor() -> FixtureSpec {
    FixtureSpec {
        seed: 2,
        alignment: 64,
        metadata: vec![
            ("general.name".to_owned(), "multi tensor fixture".to_owned()),
            ("general.architecture".to_owned(), "tinyai-test".to_owned()),
            (
                "general.description".to_owned(),
                "ünïcødé ✓ 模型".to_owned(),
            ),
        ],
        layers: vec![
            FixtureLayer {
                name: "token_embd".to_owned(),
                tensors: vec![FixtureTensor::new("weight", DType::F32, &[16, 8])],
            },
            FixtureLayer {
                name: "blk.0".to_owned(),
                tensors: vec![
                    FixtureTensor::new("attn_q.weight", DType::F16, &[8, 8]),
                    FixtureTensor::new("attn_k.weight", DType::BF16, &[8, 8]),
                    FixtureTensor::ggml("ffn_up.weight", GGML_Q4_0, &[2, 32]),
                    FixtureTensor::new("attn_norm.weight", DType::F32, &[8]),
                    FixtureTensor::new("bias", DType::I8, &[5]),
                    FixtureTensor::new("mask", DType::Bool, &[3]),
                    FixtureTensor::new("scale", DType::F64, &[]),
                    FixtureTensor::new("packed", DType::I4, &[7]),
                ],
            },
            FixtureLayer {
                name: "blk.1.empty".to_owned(),
                tensors: vec![],
            },
            FixtureLayer {
                name: "output".to_owned(),
                tensors: vec![
                    FixtureTensor::new("weight", DType::U16, &[4, 4]),
                    FixtureTensor::new("extra", DType::Opaque, &[10]),
                ],
            },
        ],
    }
}

/// About `total_bytes` of layer data in many layers of varied sizes (4 KiB to
/// 16 MiB, some not a multiple of 4 KiB), one `u8` tensor each; default
/// alignment 4096; seed 3. Write it with [`write_fixture_file`]: it is streamed.
pub fn large(total_bytes: u64) -> FixtureSpec {
    const SIZES: [u64; 8] = [
        1 << 20,
        4 << 20,
        (256 << 10) + 12,
        16 << 20,
        4 << 10,
        (3 << 20) + 4095,
        64 << 10,
        2 << 20,
    ];
    let mut sizes = Vec::new();
    let mut total = 0u64;
    while total < total_bytes {
        let size = SIZES[sizes.len() % SIZES.len()].min(total_bytes - total);
        sizes.push(size);
        total += size;
    }
    let mut spec = FixtureSpec::uniform(3, crate::limits::DEFAULT_ALIGNMENT, &sizes, 1);
    spec.metadata = vec![
        ("general.name".to_owned(), format!("large-{total_bytes}")),
        ("general.architecture".to_owned(), "tinyai-test".to_owned()),
    ];
    spec
}

/// Writes `spec` as a v2 file to `out` (positioned at 0), streaming layer data.
pub fn write_fixture<W: Write + Seek>(spec: &FixtureSpec, out: W) -> Result<W, FormatError> {
    let mut writer = Writer::new(
        out,
        WriterOptions {
            alignment: spec.alignment,
        },
    )?;
    write_contents(spec, &mut writer)?;
    writer.finish()
}

/// Writes `spec` to `path` through [`FileWriter`] (temporary file, then atomic rename).
pub fn write_fixture_file(spec: &FixtureSpec, path: impl AsRef<Path>) -> Result<(), FormatError> {
    let mut file = FileWriter::create(
        path,
        WriterOptions {
            alignment: spec.alignment,
        },
    )?;
    write_contents(spec, file.writer())?;
    file.commit()
}

fn write_contents<W: Write + Seek>(
    spec: &FixtureSpec,
    writer: &mut Writer<W>,
) -> Result<(), FormatError> {
    for (key, value) in &spec.metadata {
        writer.add_metadata(key, value)?;
    }
    for (layer_index, layer) in spec.layers.iter().enumerate() {
        let layer_index = layer_index as u64;
        let mut layer_writer = writer.begin_layer(&layer.name)?;
        let mut position = 0u64;
        for tensor in &layer.tensors {
            let length = tensor.byte_length()?;
            position = position.next_multiple_of(TENSOR_ALIGNMENT);
            let mut source = FixtureReader::new(spec.seed, layer_index, position, length);
            layer_writer.add_tensor_from_reader(&tensor.spec(), &mut source, length)?;
            position += length;
        }
        layer_writer.finish()?;
    }
    Ok(())
}

/// The bytes layer `layer` of `spec` must hold (tensors at the writer's 64-byte
/// tensor alignment, zero padding between them); `None` if there is no such layer.
/// Holds the whole layer in memory: meant for small fixtures.
pub fn expected_layer_bytes(
    spec: &FixtureSpec,
    layer: u64,
) -> Result<Option<Vec<u8>>, FormatError> {
    let Some(fixture_layer) = usize::try_from(layer)
        .ok()
        .and_then(|index| spec.layers.get(index))
    else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    for tensor in &fixture_layer.tensors {
        let length = tensor.byte_length()?;
        let start = (bytes.len() as u64).next_multiple_of(TENSOR_ALIGNMENT);
        let start_usize = usize::try_from(start)
            .map_err(|_| FormatError::InvalidInput("fixture layer too large".to_owned()))?;
        let end_usize = usize::try_from(start + length)
            .map_err(|_| FormatError::InvalidInput("fixture layer too large".to_owned()))?;
        bytes.resize(end_usize, 0);
        fill_fixture_bytes(spec.seed, layer, start, &mut bytes[start_usize..]);
    }
    Ok(Some(bytes))
}

/// Checks the bytes of layer `layer` of a v2 fixture model against the fixture
/// rule, using only the model's tensor table: every tensor byte at layer
/// position `p` equals [`fixture_byte`]`(seed, layer, p)` and every byte outside
/// the tensors is zero. Returns the first mismatching layer position, if any.
pub fn check_layer_bytes(
    seed: u64,
    model: &Model<'_>,
    layer: u64,
    bytes: &[u8],
) -> Result<Option<u64>, FormatError> {
    let info = model.layer(layer)?;
    if bytes.len() as u64 != info.length {
        return Ok(Some(bytes.len().min(info.length as usize) as u64));
    }
    let mut expected = vec![0u8; CHUNK_SIZE.min(bytes.len())];
    let mut covered = 0u64;
    for tensor in model.layer_tensors(layer)? {
        let range = tensor.range_in_layer();
        if range.start > covered
            && let Some(offset) = bytes[covered as usize..range.start as usize]
                .iter()
                .position(|&b| b != 0)
        {
            return Ok(Some(covered + offset as u64));
        }
        let mut position = range.start;
        while position < range.end {
            let take = (range.end - position).min(expected.len() as u64) as usize;
            fill_fixture_bytes(seed, layer, position, &mut expected[..take]);
            let actual = &bytes[position as usize..position as usize + take];
            if let Some(offset) = actual
                .iter()
                .zip(&expected[..take])
                .position(|(a, e)| a != e)
            {
                return Ok(Some(position + offset as u64));
            }
            position += take as u64;
        }
        covered = covered.max(range.end);
    }
    Ok(bytes[covered as usize..]
        .iter()
        .position(|&b| b != 0)
        .map(|offset| covered + offset as u64))
}

/// A legacy TinyAI v1 model: name and layer sizes (data is produced by a fill function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacySpec {
    /// Model name (at most 63 bytes are meaningful).
    pub name: String,
    /// Size of each layer in bytes.
    pub layer_sizes: Vec<u32>,
}

/// The file the original TinyAI C test suite generated: 10 layers of 1 MiB,
/// model name "Test Model", precision 4, layer `i` filled with the byte `i`
/// (write it with [`write_legacy_v1`] and [`legacy_layer_index_fill`]).
pub fn legacy_c_test_model() -> LegacySpec {
    LegacySpec {
        name: "Test Model".to_owned(),
        layer_sizes: vec![1 << 20; 10],
    }
}

/// A small variant of [`legacy_c_test_model`] (10 layers of 1 KiB) for committed golden files.
pub fn legacy_small() -> LegacySpec {
    LegacySpec {
        name: "Test Model".to_owned(),
        layer_sizes: vec![1 << 10; 10],
    }
}

/// The C generator's fill: every byte of layer `layer` is `layer as u8`.
pub fn legacy_layer_index_fill(layer: u64, _index: u64) -> u8 {
    layer as u8
}

/// Writes a legacy v1 file exactly like the original C test generator: 256-byte
/// header (magic, version 1, layer count, name NUL-padded in bytes 16..80), a
/// 32-byte table entry per layer (offset, size, precision 4), then the layers
/// back to back starting right after the table (`256 + 32 * count`), byte `j` of
/// layer `i` being `fill(i, j)`. Data is written in chunks. Returns `out`.
pub fn write_legacy_v1<W: Write>(
    mut out: W,
    name: &str,
    layer_sizes: &[u32],
    fill: impl Fn(u64, u64) -> u8,
) -> Result<W, FormatError> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| FormatError::Io { context, source }
    };
    if name.len() > 63 {
        return Err(FormatError::InvalidInput(format!(
            "legacy model name of {} bytes exceeds 63",
            name.len()
        )));
    }
    let count = u32::try_from(layer_sizes.len())
        .map_err(|_| FormatError::InvalidInput("too many legacy layers".to_owned()))?;
    let mut header = [0u8; V1_HEADER_SIZE];
    header[0..4].copy_from_slice(&MAGIC_V1);
    header[4..8].copy_from_slice(&1u32.to_le_bytes());
    header[8..12].copy_from_slice(&count.to_le_bytes());
    header[16..16 + name.len()].copy_from_slice(name.as_bytes());
    out.write_all(&header)
        .map_err(io("writing the v1 header"))?;
    let mut offset = V1_HEADER_SIZE as u64 + u64::from(count) * V1_LAYER_ENTRY_SIZE as u64;
    for &size in layer_sizes {
        let offset32 = u32::try_from(offset)
            .map_err(|_| FormatError::InvalidInput("legacy file exceeds 4 GiB".to_owned()))?;
        let mut entry = [0u8; V1_LAYER_ENTRY_SIZE];
        entry[0..4].copy_from_slice(&offset32.to_le_bytes());
        entry[4..8].copy_from_slice(&size.to_le_bytes());
        entry[8..12].copy_from_slice(&4u32.to_le_bytes());
        out.write_all(&entry)
            .map_err(io("writing the v1 layer table"))?;
        offset += u64::from(size);
    }
    let mut chunk = vec![0u8; CHUNK_SIZE];
    for (layer, &size) in layer_sizes.iter().enumerate() {
        let mut written = 0u64;
        while written < u64::from(size) {
            let take = (u64::from(size) - written).min(CHUNK_SIZE as u64) as usize;
            for (i, byte) in chunk[..take].iter_mut().enumerate() {
                *byte = fill(layer as u64, written + i as u64);
            }
            out.write_all(&chunk[..take])
                .map_err(io("writing v1 layer data"))?;
            written += take as u64;
        }
    }
    out.flush().map_err(io("flushing"))?;
    Ok(out)
}

/// Writes `spec` as a legacy v1 file at `path` (layer `i` filled with byte `i`).
pub fn write_legacy_file(spec: &LegacySpec, path: impl AsRef<Path>) -> Result<(), FormatError> {
    let path = path.as_ref();
    let file = std::fs::File::create(path).map_err(|source| FormatError::Io {
        context: format!("creating {}", path.display()),
        source,
    })?;
    write_legacy_v1(
        std::io::BufWriter::new(file),
        &spec.name,
        &spec.layer_sizes,
        legacy_layer_index_fill,
    )?;
    Ok(())
}

/// The bytes of a legacy fixture written with [`legacy_layer_index_fill`], in memory.
pub fn legacy_bytes(spec: &LegacySpec) -> Result<Vec<u8>, FormatError> {
    write_legacy_v1(
        Vec::new(),
        &spec.name,
        &spec.layer_sizes,
        legacy_layer_index_fill,
    )
}

/// The bytes of a v2 fixture, in memory (for small fixtures).
pub fn fixture_bytes(spec: &FixtureSpec) -> Result<Vec<u8>, FormatError> {
    Ok(write_fixture(spec, std::io::Cursor::new(Vec::new()))?.into_inner())
}

/// The committed golden files (`fixtures/` at the repository root), by file
/// name, as the current writer produces them. `tests/golden.rs` compares them
/// byte for byte; `cargo xtask fixtures --update-golden` rewrites them.
pub fn golden_files() -> Result<Vec<(&'static str, Vec<u8>)>, FormatError> {
    Ok(vec![
        ("tiny.tmai", fixture_bytes(&tiny())?),
        ("multi_tensor.tmai", fixture_bytes(&multi_tensor())?),
        ("legacy_v1_small.tmai", legacy_bytes(&legacy_small())?),
    ])
}

/// A GGUF v3 file written for tests: string and `u32` metadata, then tensors
/// whose data start at multiples of the alignment (32 unless `general.alignment`
/// is set with [`GgufWriter::alignment`]). Shapes are given outermost first, as
/// everywhere in this crate, and written innermost first, as GGUF stores them.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<u8>,
    metadata_count: u64,
    alignment: Option<u64>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn gguf_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

impl GgufWriter {
    /// An empty file.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a string metadata value.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        gguf_string(&mut self.metadata, key);
        self.metadata.extend_from_slice(&8u32.to_le_bytes());
        gguf_string(&mut self.metadata, value);
        self.metadata_count += 1;
        self
    }

    /// Adds a `u32` metadata value.
    pub fn u32(&mut self, key: &str, value: u32) -> &mut Self {
        gguf_string(&mut self.metadata, key);
        self.metadata.extend_from_slice(&4u32.to_le_bytes());
        self.metadata.extend_from_slice(&value.to_le_bytes());
        self.metadata_count += 1;
        self
    }

    /// Sets `general.alignment` (a power of two).
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = Some(u64::from(alignment));
        self.u32("general.alignment", alignment)
    }

    /// Adds a tensor of GGML type `ggml_type` (0 = F32, 1 = F16, …) with its bytes.
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[u64],
        ggml_type: u32,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors
            .push((name.to_owned(), shape.to_vec(), ggml_type, data));
        self
    }

    /// A GGUF file holding the tensors of a safetensors file (`bytes`, the whole
    /// file) under the same names, shapes and bytes, in data order, with its
    /// `__metadata__` as string values (for plain dtypes GGUF has: f32, f16,
    /// bf16, f64, i8, i16, i32, i64; others are an error).
    ///
    /// # Errors
    /// The safetensors header's error, or [`FormatError::InvalidInput`] for a
    /// dtype GGUF cannot hold.
    pub fn from_safetensors(bytes: &[u8]) -> Result<GgufWriter, FormatError> {
        let header = crate::SafetensorsHeader::parse(bytes, bytes.len() as u64)?;
        let mut writer = GgufWriter::new();
        for (key, value) in &header.metadata {
            writer.string(key, value);
        }
        for tensor in &header.tensors {
            let ggml = match tensor.dtype {
                DType::F32 => 0,
                DType::F16 => 1,
                DType::I8 => 24,
                DType::I16 => 25,
                DType::I32 => 26,
                DType::I64 => 27,
                DType::F64 => 28,
                DType::BF16 => 30,
                other => {
                    return Err(FormatError::InvalidInput(format!(
                        "tensor {}: GGUF has no plain type for {other:?}",
                        tensor.name
                    )));
                }
            };
            let data = bytes[tensor.start as usize..tensor.end as usize].to_vec();
            writer.tensor(&tensor.name, &tensor.shape, ggml, data);
        }
        Ok(writer)
    }

    /// The file's bytes.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let alignment = self.alignment.unwrap_or(32).max(1);
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.metadata_count.to_le_bytes());
        out.extend_from_slice(&self.metadata);
        let mut offset = 0u64;
        for (name, shape, ggml_type, data) in &self.tensors {
            gguf_string(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for dimension in shape.iter().rev() {
                out.extend_from_slice(&dimension.to_le_bytes());
            }
            out.extend_from_slice(&ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + data.len() as u64).next_multiple_of(alignment);
        }
        out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
        }
        out
    }
}

/// Name of the environment variable naming the file where [`skip`] records
/// skipped tests (`.ci/run` sets it and fails on skips not in its allowlist).
pub const SKIP_LOG_VARIABLE: &str = "TINYAI_SKIP_LOG";

/// Reports that `test` cannot check what it exists for, and why: prints
/// `SKIP: <test>: <reason>` (to stdout and stderr, so it shows even when the
/// test harness captures output) and appends the same line to the file named
/// by [`SKIP_LOG_VARIABLE`], if set. The test then returns without asserting;
/// CI decides whether that skip is allowed. Shared by every crate's tests.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIP: {test}: {}", reason.replace('\n', " "));
    println!("{line}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_VARIABLE) {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        if let Err(error) = appended {
            eprintln!(
                "cannot record the skip in {}: {error}",
                path.to_string_lossy()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn gguf_writer_output_parses_back() {
        let mut writer = GgufWriter::new();
        writer
            .string("general.name", "t")
            .tensor("blk.0.w", &[2, 3], 0, (0..24).collect());
        let bytes = writer.build();
        let header = crate::GgufHeader::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(header.tensors[0].shape, [2, 3]);
        let start = header.tensors[0].start as usize;
        assert_eq!(bytes[start..start + 24], (0..24).collect::<Vec<u8>>()[..]);
    }

    #[test]
    fn chunked_fill_matches_the_byte_definition() {
        let mut buffer = vec![0u8; 100];
        fill_fixture_bytes(7, 3, 5, &mut buffer);
        for (i, &byte) in buffer.iter().enumerate() {
            assert_eq!(byte, fixture_byte(7, 3, 5 + i as u64));
        }
        assert_ne!(fixture_byte(7, 3, 0), fixture_byte(7, 4, 0));
    }

    #[test]
    fn presets_round_trip_and_match_their_content_rule() {
        for spec in [
            tiny(),
            multi_tensor(),
            FixtureSpec::uniform(9, 64, &[0, 1, 100, 4096], 3),
        ] {
            let bytes = fixture_bytes(&spec).unwrap();
            let model = Model::parse(&bytes).unwrap();
            model.verify_all().unwrap();
            assert_eq!(model.layer_count(), spec.layers.len() as u64);
            for layer in 0..model.layer_count() {
                let data = model.layer_bytes(layer).unwrap();
                assert_eq!(
                    check_layer_bytes(spec.seed, &model, layer, data).unwrap(),
                    None
                );
                assert_eq!(expected_layer_bytes(&spec, layer).unwrap().unwrap(), data);
            }
        }
    }
}
