//! The streaming writer: layers go to the output as they come, only the tables
//! are kept in memory, and files are replaced atomically.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::checksum::{crc32c, crc32c_append};
use crate::dtype::{expected_byte_length, ggml_block};
use crate::error::FormatError;
use crate::raw::{
    HEADER_SIZE, LAYER_FLAG_HAS_CHECKSUM, MAGIC_V2, RawHeader, RawLayer, RawMetadata, RawTensor,
};
use crate::reader::{MAJOR_VERSION, MINOR_VERSION, header_crc};
use crate::{DType, limits};

/// Options of a [`Writer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Alignment of every layer's first byte: a power of two in 64..=1 GiB (default 4096).
    pub alignment: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            alignment: limits::DEFAULT_ALIGNMENT,
        }
    }
}

/// Describes a tensor to write.
#[derive(Clone, Copy, Debug)]
pub struct TensorSpec<'s> {
    /// Name, unique within its layer.
    pub name: &'s str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first (at most 8; empty for a scalar).
    pub shape: &'s [u64],
    /// GGML type id for [`DType::Ggml`], otherwise 0.
    pub source_type: u32,
}

impl<'s> TensorSpec<'s> {
    /// A tensor of a plain dtype.
    pub fn new(name: &'s str, dtype: DType, shape: &'s [u64]) -> Self {
        TensorSpec {
            name,
            dtype,
            shape,
            source_type: 0,
        }
    }
}

/// Writes a v2 `.tmai` file to any `Write + Seek` sink, one layer at a time.
///
/// Layer data is streamed straight to the sink with its CRC-32C computed on the
/// way; only the tables (about 100 bytes per tensor) stay in memory. The header
/// is written last (the writer seeks back to offset 0). For files on disk use
/// [`FileWriter`], which also makes the replacement atomic.
#[derive(Debug)]
pub struct Writer<W: Write + Seek> {
    out: W,
    alignment: u64,
    position: u64,
    layers: Vec<RawLayer>,
    tensors: Vec<RawTensor>,
    metadata: Vec<RawMetadata>,
    strings: Vec<u8>,
    layer_names: HashSet<String>,
    metadata_keys: HashSet<String>,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a file on `out` (which should be empty and positioned at 0).
    pub fn new(mut out: W, options: WriterOptions) -> Result<Self, FormatError> {
        let alignment = options.alignment;
        if !alignment.is_power_of_two()
            || !(limits::MIN_ALIGNMENT..=limits::MAX_ALIGNMENT).contains(&alignment)
        {
            return Err(FormatError::InvalidAlignment { alignment });
        }
        out.seek(SeekFrom::Start(0))
            .map_err(FormatError::io("seeking to the start of the output"))?;
        let mut writer = Writer {
            out,
            alignment,
            position: 0,
            layers: Vec::new(),
            tensors: Vec::new(),
            metadata: Vec::new(),
            strings: Vec::new(),
            layer_names: HashSet::new(),
            metadata_keys: HashSet::new(),
        };
        // Placeholder header; the real one is written by `finish`.
        writer.write_all(&[0u8; HEADER_SIZE])?;
        Ok(writer)
    }

    /// Adds a metadata key/value pair (keys unique, at most 65,535 bytes; values at most 16 MiB).
    pub fn add_metadata(&mut self, key: &str, value: &str) -> Result<(), FormatError> {
        check_length("metadata key", key, limits::MAX_NAME_LENGTH)?;
        check_length("metadata value", value, limits::MAX_METADATA_VALUE_LENGTH)?;
        if !self.metadata_keys.insert(key.to_owned()) {
            return Err(FormatError::InvalidInput(format!(
                "duplicate metadata key {key:?}"
            )));
        }
        let (key_offset, key_length) = self.intern(key);
        let (value_offset, value_length) = self.intern(value);
        self.metadata.push(RawMetadata {
            key_offset: U64::new(key_offset),
            value_offset: U64::new(value_offset),
            key_length: U32::new(key_length),
            value_length: U32::new(value_length),
        });
        Ok(())
    }

    /// Starts the next layer. Layer names are unique, at most 65,535 bytes.
    ///
    /// Call [`LayerWriter::finish`] to record it; a `LayerWriter` dropped without
    /// `finish` leaves its bytes as unreferenced padding and records nothing.
    pub fn begin_layer(&mut self, name: &str) -> Result<LayerWriter<'_, W>, FormatError> {
        check_length("layer name", name, limits::MAX_NAME_LENGTH)?;
        if self.layer_names.contains(name) {
            return Err(FormatError::InvalidInput(format!(
                "duplicate layer name {name:?}"
            )));
        }
        // Tensors of a LayerWriter dropped without `finish` are not recorded.
        self.forget_unfinished_tensors();
        self.pad_to(self.alignment)?;
        let offset = self.position;
        let first_tensor = self.tensors.len() as u64;
        Ok(LayerWriter {
            writer: self,
            name: name.to_owned(),
            offset,
            length: 0,
            crc: crc32c(&[]),
            first_tensor,
            tensor_names: HashSet::new(),
            dtype: None,
            precision_bits: None,
            widest_tensor: (0, 8),
        })
    }

    /// Writes a whole layer of in-memory tensors (convenience over [`Writer::begin_layer`]).
    pub fn add_layer(
        &mut self,
        name: &str,
        tensors: &[(TensorSpec<'_>, &[u8])],
    ) -> Result<(), FormatError> {
        let mut layer = self.begin_layer(name)?;
        for (spec, data) in tensors {
            layer.add_tensor(spec, data)?;
        }
        layer.finish()
    }

    /// Number of layers recorded so far.
    pub fn layer_count(&self) -> u64 {
        self.layers.len() as u64
    }

    /// Writes the tables and the header, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W, FormatError> {
        self.forget_unfinished_tensors();
        self.pad_to(8)?;
        let layer_table_offset = self.position;
        let layers = std::mem::take(&mut self.layers);
        let tensors = std::mem::take(&mut self.tensors);
        let metadata = std::mem::take(&mut self.metadata);
        let strings = std::mem::take(&mut self.strings);
        let mut tables_crc = crc32c(&[]);
        let mut write_table = |writer: &mut Self, bytes: &[u8]| -> Result<u64, FormatError> {
            let offset = writer.position;
            tables_crc = crc32c_append(tables_crc, bytes);
            writer.write_all(bytes)?;
            Ok(offset)
        };
        write_table(&mut self, layers.as_bytes())?;
        let tensor_table_offset = write_table(&mut self, tensors.as_bytes())?;
        let metadata_table_offset = write_table(&mut self, metadata.as_bytes())?;
        let string_table_offset = write_table(&mut self, &strings)?;
        let file_length = self.position;
        let mut header = RawHeader {
            magic: MAGIC_V2,
            major: U16::new(MAJOR_VERSION),
            minor: U16::new(MINOR_VERSION),
            header_size: U32::new(HEADER_SIZE as u32),
            file_length: U64::new(file_length),
            alignment: U64::new(self.alignment),
            layer_count: U64::new(layers.len() as u64),
            layer_table_offset: U64::new(layer_table_offset),
            tensor_count: U64::new(tensors.len() as u64),
            tensor_table_offset: U64::new(tensor_table_offset),
            metadata_count: U64::new(metadata.len() as u64),
            metadata_table_offset: U64::new(metadata_table_offset),
            string_table_offset: U64::new(string_table_offset),
            string_table_length: U64::new(strings.len() as u64),
            reserved: [0; 24],
            tables_crc32c: U32::new(tables_crc),
            header_crc32c: U32::new(0),
        };
        header.header_crc32c = U32::new(header_crc(header.as_bytes()));
        self.out
            .seek(SeekFrom::Start(0))
            .map_err(FormatError::io("seeking back to write the header"))?;
        self.out
            .write_all(header.as_bytes())
            .map_err(FormatError::io("writing the header"))?;
        self.out
            .seek(SeekFrom::Start(file_length))
            .map_err(FormatError::io("seeking to the end"))?;
        self.out.flush().map_err(FormatError::io("flushing"))?;
        Ok(self.out)
    }

    /// Drops tensor entries past the last finished layer's range (left by a
    /// [`LayerWriter`] dropped without [`LayerWriter::finish`]).
    fn forget_unfinished_tensors(&mut self) {
        let recorded = self.layers.last().map_or(0, |layer| {
            layer.first_tensor.get() + layer.tensor_count.get()
        });
        self.tensors.truncate(recorded as usize);
    }

    fn intern(&mut self, text: &str) -> (u64, u32) {
        let offset = self.strings.len() as u64;
        self.strings.extend_from_slice(text.as_bytes());
        // Lengths were checked against limits well below u32::MAX.
        (offset, text.len() as u32)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.out
            .write_all(bytes)
            .map_err(FormatError::io("writing"))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, alignment: u64) -> Result<u64, FormatError> {
        let padding = self.position.next_multiple_of(alignment) - self.position;
        write_zeros(self, padding, |_| {})?;
        Ok(padding)
    }
}

fn write_zeros<W: Write + Seek>(
    writer: &mut Writer<W>,
    mut count: u64,
    mut observe: impl FnMut(&[u8]),
) -> Result<(), FormatError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while count > 0 {
        let chunk = &ZEROS[..count.min(ZEROS.len() as u64) as usize];
        observe(chunk);
        writer.write_all(chunk)?;
        count -= chunk.len() as u64;
    }
    Ok(())
}

fn check_length(what: &str, text: &str, limit: u64) -> Result<(), FormatError> {
    if text.len() as u64 > limit {
        return Err(FormatError::InvalidInput(format!(
            "{what} of {} bytes exceeds the limit of {limit}",
            text.len()
        )));
    }
    Ok(())
}

/// Writes one layer; obtained from [`Writer::begin_layer`].
#[derive(Debug)]
pub struct LayerWriter<'w, W: Write + Seek> {
    writer: &'w mut Writer<W>,
    name: String,
    offset: u64,
    length: u64,
    crc: u32,
    first_tensor: u64,
    tensor_names: HashSet<String>,
    dtype: Option<DType>,
    precision_bits: Option<u16>,
    widest_tensor: (u64, u16),
}

impl<W: Write + Seek> LayerWriter<'_, W> {
    /// Appends a tensor whose bytes are in memory.
    pub fn add_tensor(&mut self, spec: &TensorSpec<'_>, data: &[u8]) -> Result<(), FormatError> {
        let mut remaining = data;
        self.add_tensor_from_reader(spec, &mut remaining, data.len() as u64)
    }

    /// Appends a tensor of `length` bytes streamed from `reader`.
    ///
    /// The tensor starts at the next multiple of 64 bytes within the layer
    /// (zero padding), so typed views of any element type are aligned.
    pub fn add_tensor_from_reader(
        &mut self,
        spec: &TensorSpec<'_>,
        reader: &mut dyn Read,
        length: u64,
    ) -> Result<(), FormatError> {
        let invalid = |reason: String| FormatError::InvalidTensorSpec {
            name: spec.name.to_owned(),
            reason,
        };
        check_length("tensor name", spec.name, limits::MAX_NAME_LENGTH)?;
        if spec.shape.len() > limits::MAX_RANK {
            return Err(invalid(format!(
                "rank {} exceeds {}",
                spec.shape.len(),
                limits::MAX_RANK
            )));
        }
        if matches!(spec.dtype, DType::Mixed | DType::Unknown(_)) {
            return Err(invalid(format!("dtype {} cannot be written", spec.dtype)));
        }
        let element_count = spec
            .shape
            .iter()
            .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)));
        let expected = element_count
            .and_then(|count| expected_byte_length(spec.dtype, spec.source_type, count));
        if let Some(expected) = expected
            && expected != u128::from(length)
        {
            return Err(invalid(format!(
                "dtype {} with shape {:?} needs {expected} bytes, got {length}",
                spec.dtype, spec.shape
            )));
        }
        if element_count.is_none() {
            return Err(invalid("element count overflows".to_owned()));
        }
        if self.tensor_names.contains(spec.name) {
            return Err(invalid("duplicate tensor name within the layer".to_owned()));
        }
        let padding = self.length.next_multiple_of(limits::TENSOR_ALIGNMENT) - self.length;
        let mut crc = self.crc;
        write_zeros(self.writer, padding, |chunk| {
            crc = crc32c_append(crc, chunk)
        })?;
        self.length += padding;
        let offset_in_layer = self.length;
        let mut buffer = vec![0u8; (1 << 20).min(length.max(1)) as usize];
        let mut remaining = length;
        let mut copied = Ok(());
        while remaining > 0 {
            let want = remaining.min(buffer.len() as u64) as usize;
            let got = match reader.read(&mut buffer[..want]) {
                Ok(0) => {
                    copied = Err(invalid(format!(
                        "source ended {remaining} bytes before the declared length {length}"
                    )));
                    break;
                }
                Ok(got) => got,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    copied = Err(FormatError::io(format!("reading tensor {:?}", spec.name))(
                        error,
                    ));
                    break;
                }
            };
            if let Err(error) = self.writer.write_all(&buffer[..got]) {
                copied = Err(error);
                break;
            }
            crc = crc32c_append(crc, &buffer[..got]);
            remaining -= got as u64;
        }
        // Bytes already written stay in the layer (as unreferenced padding if the
        // copy failed), so the layer's length and checksum cover them either way.
        self.crc = crc;
        self.length += length - remaining;
        copied?;
        let (name_offset, name_length) = self.writer.intern(spec.name);
        let mut shape = [U64::new(0); 8];
        for (slot, &dim) in shape.iter_mut().zip(spec.shape) {
            *slot = U64::new(dim);
        }
        self.writer.tensors.push(RawTensor {
            name_offset: U64::new(name_offset),
            name_length: U32::new(name_length),
            dtype: U16::new(spec.dtype.code()),
            rank: U16::new(spec.shape.len() as u16),
            offset: U64::new(offset_in_layer),
            length: U64::new(length),
            shape,
            source_type: U32::new(spec.source_type),
            reserved: [0; 4],
        });
        self.tensor_names.insert(spec.name.to_owned());
        self.dtype = Some(match self.dtype {
            None => spec.dtype,
            Some(existing) if existing == spec.dtype => existing,
            Some(_) => DType::Mixed,
        });
        if length >= self.widest_tensor.0 {
            self.widest_tensor = (length, precision_of(spec.dtype, spec.source_type));
        }
        Ok(())
    }

    /// Appends untyped bytes to the layer (for layers without a tensor table, such as
    /// upgraded legacy v1 layers). The layer's dtype becomes opaque unless tensors are added.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.crc = crc32c_append(self.crc, bytes);
        self.writer.write_all(bytes)?;
        self.length += bytes.len() as u64;
        Ok(())
    }

    /// Overrides the layer's bits-per-weight (1..=64); by default it is derived from
    /// its dtype (the largest tensor's, for mixed layers; 8 for opaque layers).
    pub fn set_precision_bits(&mut self, bits: u16) -> Result<(), FormatError> {
        if !(1..=64).contains(&bits) {
            return Err(FormatError::InvalidInput(format!(
                "precision of {bits} bits is outside 1..=64"
            )));
        }
        self.precision_bits = Some(bits);
        Ok(())
    }

    /// Records the layer in the layer table.
    pub fn finish(self) -> Result<(), FormatError> {
        let dtype = self.dtype.unwrap_or(DType::Opaque);
        let precision = self.precision_bits.unwrap_or(self.widest_tensor.1);
        let tensor_count = self.writer.tensors.len() as u64 - self.first_tensor;
        let (name_offset, name_length) = self.writer.intern(&self.name);
        self.writer.layers.push(RawLayer {
            offset: U64::new(self.offset),
            length: U64::new(self.length),
            name_offset: U64::new(name_offset),
            name_length: U32::new(name_length),
            checksum: U32::new(self.crc),
            first_tensor: U64::new(self.first_tensor),
            tensor_count: U64::new(tensor_count),
            dtype: U16::new(dtype.code()),
            precision_bits: U16::new(precision),
            flags: U32::new(LAYER_FLAG_HAS_CHECKSUM),
            reserved: [0; 8],
        });
        self.writer.layer_names.insert(self.name);
        Ok(())
    }
}

/// Bits per weight recorded for a tensor of this dtype (rounded up, 1..=64).
pub fn precision_of(dtype: DType, source_type: u32) -> u16 {
    if let Some(bits) = dtype.bits() {
        return bits as u16;
    }
    if dtype == DType::Ggml
        && let Some((elements, bytes)) = ggml_block(source_type)
    {
        return (bytes * 8).div_ceil(elements).clamp(1, 64) as u16;
    }
    8
}

/// A [`Writer`] onto a temporary file next to `path` that replaces `path` only on
/// [`FileWriter::commit`]: a file mapped elsewhere is never truncated underneath,
/// and a failed or abandoned write leaves the old file untouched (the temporary
/// file is removed on drop).
#[derive(Debug)]
pub struct FileWriter {
    writer: Option<Writer<BufWriter<File>>>,
    temp_path: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl FileWriter {
    /// Creates the temporary file (`.NAME.tmp-PID-N` in the same directory).
    pub fn create(path: impl AsRef<Path>, options: WriterOptions) -> Result<Self, FormatError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let final_path = path.as_ref().to_path_buf();
        let file_name = final_path
            .file_name()
            .ok_or_else(|| {
                FormatError::InvalidInput(format!("{} has no file name", final_path.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let temp_path = final_path.with_file_name(format!(
            ".{file_name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(FormatError::io(format!("creating {}", temp_path.display())))?;
        let mut this = FileWriter {
            writer: None,
            temp_path,
            final_path,
            committed: false,
        };
        this.writer = Some(Writer::new(
            BufWriter::with_capacity(1 << 20, file),
            options,
        )?);
        Ok(this)
    }

    /// The writer (for `add_metadata`, `begin_layer` …).
    pub fn writer(&mut self) -> &mut Writer<BufWriter<File>> {
        // Always Some until `commit` consumes self.
        self.writer.as_mut().unwrap_or_else(|| unreachable!())
    }

    /// Finishes the file, syncs it and renames it over the destination.
    pub fn commit(mut self) -> Result<(), FormatError> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| FormatError::InvalidInput("writer already committed".to_owned()))?;
        let buffered = writer.finish()?;
        let file = buffered.into_inner().map_err(|error| FormatError::Io {
            context: "flushing the output".to_owned(),
            source: error.into_error(),
        })?;
        file.sync_all()
            .map_err(FormatError::io("syncing the output"))?;
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path).map_err(FormatError::io(format!(
            "renaming {} to {}",
            self.temp_path.display(),
            self.final_path.display()
        )))?;
        self.committed = true;
        if let Some(dir) = self.final_path.parent()
            && let Ok(dir) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            // Best effort: persist the rename itself.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Model;
    use zerocopy::FromBytes;

    /// The worked example of docs/format.md, byte for byte.
    #[test]
    fn documented_example_is_what_the_writer_produces() {
        let mut writer = Writer::new(
            std::io::Cursor::new(Vec::new()),
            WriterOptions { alignment: 64 },
        )
        .unwrap();
        writer.add_metadata("general.name", "t").unwrap();
        let data = [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40];
        writer
            .add_layer("l0", &[(TensorSpec::new("w", DType::F32, &[2]), &data[..])])
            .unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        assert_eq!(bytes.len(), 344);
        let header = RawHeader::ref_from_bytes(&bytes[..128]).unwrap();
        assert_eq!(header.file_length.get(), 344);
        assert_eq!(header.layer_table_offset.get(), 136);
        assert_eq!(header.tensor_table_offset.get(), 200);
        assert_eq!(header.metadata_table_offset.get(), 304);
        assert_eq!(header.string_table_offset.get(), 328);
        assert_eq!(header.string_table_length.get(), 16);
        assert_eq!(&bytes[128..136], &data);
        assert_eq!(&bytes[328..344], b"general.nametwl0");
        let layer = RawLayer::ref_from_bytes(&bytes[136..200]).unwrap();
        assert_eq!(layer.name_offset.get(), 14);
        assert_eq!(layer.checksum.get(), crc32c(&data));
        let tensor = RawTensor::ref_from_bytes(&bytes[200..304]).unwrap();
        assert_eq!(tensor.name_offset.get(), 13);
        assert_eq!(&bytes[0..8], &MAGIC_V2);
        let model = Model::parse(&bytes).unwrap();
        assert_eq!(model.metadata_value("general.name"), Some("t"));
        model.verify_all().unwrap();
    }
}
