//! Zero-copy reader and streaming writer for the TinyAI `.tmai` model format.
//!
//! A `.tmai` file holds a model's weights as a sequence of **layers**, each an
//! aligned run of bytes containing one or more **tensors**, followed by tables
//! that describe them. The byte-exact specification is `docs/format.md` in the
//! repository; this crate is its reference implementation.
//!
//! This crate parses `&[u8]` by borrowing and leaves files, mappings and threads
//! to its callers (the store maps the file; a tool may pass a `Vec`). Parsing
//! validates every offset, length, count, string and checksum of the header and
//! tables before anything is used, never allocates in proportion to a count it
//! has not checked against the file size, and never touches layer data. Layer
//! checksums are verified on request.
//!
//! # Modules
//! - [`reader`]: [`Model`] — parse and validate, then borrow layers, tensors and metadata.
//! - [`writer`]: [`Writer`] (any `Write + Seek`) and [`FileWriter`] (temp file + atomic rename).
//! - [`raw`]: the on-disk `#[repr(C)]` little-endian structs (zerocopy), for tools that want raw access.
//! - [`dtype`]: element types, their codes and sizes, and the GGML block table.
//! - [`grouping`]: the tensor → layer grouping rules shared by `tmai convert` and the direct readers.
//! - [`direct`]: [`ForeignModel`] — a safetensors file, sharded set or GGUF file viewed as a [`Model`] (opened as it is).
//! - [`foreign`]: [`ForeignTensor`] and [`ForeignLayer`] — tensors and layers of a safetensors or GGUF file, with absolute byte ranges.
//! - [`safetensors`]: [`SafetensorsHeader`] and the sharded-set index [`ShardIndex`].
//! - [`gguf`]: [`GgufHeader`] — GGUF v2/v3 metadata, tensor infos, alignment and data offset.
//! - [`checksum`]: CRC-32C as the format uses it.
//! - [`limits`]: the documented limits.
//! - [`error`]: [`FormatError`], the one error type (with [`SourceError`] for safetensors and GGUF headers).
//!
//! # Example
//! ```
//! use tinyai_format::{DType, Model, TensorSpec, Writer, WriterOptions};
//! # fn main() -> Result<(), tinyai_format::FormatError> {
//! let mut writer = Writer::new(std::io::Cursor::new(Vec::new()), WriterOptions::default())?;
//! writer.add_metadata("general.name", "tiny")?;
//! let weights: Vec<u8> = (0..4 * 6).map(|i| i as u8).collect();
//! writer.add_layer("layers.0", &[(TensorSpec::new("weight", DType::F32, &[2, 3]), &weights[..])])?;
//! let bytes = writer.finish()?.into_inner();
//!
//! let model = Model::parse(&bytes)?;
//! assert_eq!(model.layer_count(), 1);
//! let tensor = model.find_tensor(0, "weight")?.expect("written above");
//! assert_eq!(tensor.shape(), &[2, 3]);
//! model.verify_all()?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod checksum;
pub mod direct;
pub mod dtype;
pub mod error;
pub mod fixtures;
pub mod foreign;
pub mod gguf;
pub mod grouping;
pub mod limits;
pub mod raw;
pub mod reader;
pub mod real_model;
pub mod safetensors;
pub mod writer;

pub use direct::{FilePlacement, ForeignModel};
pub use dtype::DType;
pub use error::{FormatError, SourceError, StringOwner, Table};
pub use foreign::{FileKind, ForeignLayer, ForeignTensor, LayerSpan, detect, group_layers};
pub use gguf::GgufHeader;
pub use grouping::Grouping;
pub use reader::{LayerInfo, Model, TableLocation, TensorInfo, Version, locate_tables};
pub use safetensors::{SafetensorsHeader, ShardIndex};
pub use writer::{FileWriter, LayerWriter, TensorSpec, Writer, WriterOptions};
