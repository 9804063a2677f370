//! `tmai`, the TinyAI command-line tool: inspect, verify and convert `.tmai` files;
//! `inspect` and `verify` also open safetensors files, sharded safetensors sets and
//! GGUF files as they are (detected by content).
//!
//! The binary (`src/main.rs`) only calls [`main_with_args`]; everything else lives
//! here so tests can call it. Parsing and validation of `.tmai` files belong to
//! `tinyai-format`; this crate reads the bytes that crate asks for and renders results.
//!
//! # Modules
//! - [`cli`]: clap definitions, dispatch, exit codes (0 ok, 1 failure, 2 usage).
//! - [`inspect`]: `tmai inspect [--json]` — header, metadata, layers, tensors; the JSON schema.
//! - [`verify`]: `tmai verify` — structure plus every layer checksum, streamed (safetensors
//!   and GGUF files: structure, and every layer byte read; they have no checksums).
//! - [`convert`]: `tmai convert` — safetensors / sharded safetensors / GGUF / legacy v1
//!   to `.tmai`, with [`convert::grouping`] (tensor → layer rules), [`convert::safetensors`],
//!   [`convert::gguf`] and [`convert::legacy`].
//! - [`model_file`]: opening what `inspect`/`verify` accept (`.tmai`, legacy v1, safetensors,
//!   a sharded set's index, GGUF), detected by content, as a [`tinyai_format::Model`].
//! - [`tmai_file`]: bounded-memory opening of a `.tmai` file (header and tables only).
//! - [`source`]: positioned, range-checked reads from input files.
//! - [`progress`]: indicatif bar on a terminal, plain lines otherwise.
//! - [`error`]: [`CliError`], one line per failure, naming what and where.
//!
//! # Memory
//! No command reads a whole model: `inspect` reads the header and tables (or the
//! safetensors/GGUF headers),
//! `verify` streams each layer through the CRC in 1 MiB chunks, `convert` reads
//! source headers and copies each tensor through a 1 MiB buffer.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
pub mod convert;
pub mod error;
pub mod inspect;
pub mod model_file;
pub mod progress;
pub mod remote;
pub mod source;
pub mod tmai_file;
pub mod verify;

pub use cli::main_with_args;
pub use error::CliError;
