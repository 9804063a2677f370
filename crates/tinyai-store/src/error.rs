//! The one error type of this crate.

use std::path::PathBuf;

use tinyai_format::{DType, FormatError};

/// Everything that can go wrong opening a model or serving its layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened, inspected or read.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a device …).
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is not a valid `.tmai` file (or a layer failed checksum verification).
    #[error("{path}: {source}")]
    Format {
        /// The model file.
        path: PathBuf,
        /// What the format crate found.
        #[source]
        source: FormatError,
    },
    /// A remote model (feature `remote`) could not be fetched: the server
    /// could not be reached or failed after retries, or refused the request.
    /// (A missing object is [`StoreError::Io`] with `NotFound`, as for a file.)
    #[error("{url}: {action} failed: {source}")]
    Remote {
        /// The model's URL.
        url: String,
        /// What was being done.
        action: &'static str,
        /// What the client reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A layer index past the end.
    #[error("layer index {index} out of range (model has {count} layers)")]
    LayerOutOfRange {
        /// Requested index.
        index: u64,
        /// Layer count.
        count: u64,
    },
    /// The file changed size (or identity) since it was opened; serving from it
    /// could read garbage (or, mapped, crash), so the store refuses.
    #[error(
        "{path}: the file changed since it was opened (length {opened} → {now}); reopen the model"
    )]
    FileChanged {
        /// The model file.
        path: PathBuf,
        /// Length at open.
        opened: u64,
        /// Length now.
        now: u64,
    },
    /// A read returned fewer bytes than the layer has (the file was truncated underneath).
    #[error("{path}: layer {layer} truncated: read {read} of {expected} bytes at offset {offset}")]
    ShortRead {
        /// The model file.
        path: PathBuf,
        /// Layer index.
        layer: u64,
        /// Offset read from.
        offset: u64,
        /// Bytes expected.
        expected: u64,
        /// Bytes obtained.
        read: u64,
    },
    /// A typed view was requested that the bytes do not allow.
    #[error("layer {layer}: cannot view {what}: {reason}")]
    View {
        /// Layer index.
        layer: u64,
        /// What was asked for (tensor name or element type).
        what: String,
        /// Why not.
        reason: String,
    },
    /// The tensor does not exist in the layer.
    #[error("layer {layer}: no tensor named {name:?}")]
    NoSuchTensor {
        /// Layer index.
        layer: u64,
        /// Requested name.
        name: String,
    },
    /// The dtype stored does not match the type requested.
    #[error("layer {layer}: tensor {name:?} has dtype {stored}, not {requested}")]
    DTypeMismatch {
        /// Layer index.
        layer: u64,
        /// Tensor name.
        name: String,
        /// Stored dtype.
        stored: DType,
        /// Requested dtype.
        requested: DType,
    },
    /// A bulk load was cancelled by its progress callback.
    #[error("cancelled by the progress callback after {completed} of {total} layers")]
    Cancelled {
        /// Layers done.
        completed: u64,
        /// Layers requested.
        total: u64,
    },
    /// A layer is pinned by more live guards on one thread stripe than the store
    /// counts (2²³ − 1).
    #[error("layer {index} is pinned by too many live guards")]
    TooManyPins {
        /// Layer index.
        index: u64,
    },
    /// A priority that is not a finite number.
    #[error("layer {index}: priority {priority} is not a finite number")]
    InvalidPriority {
        /// Layer index.
        index: u64,
        /// The value refused.
        priority: f32,
    },
    /// A detached or soft pin was given back to a model that did not issue it.
    #[error("the pin of layer {index} belongs to another model")]
    ForeignPin {
        /// Layer index.
        index: u64,
    },
    /// Soft pins need the mapped backend (see `MappedModel::pin_soft`).
    #[error(
        "layer {index}: soft pins need the mapped backend (an owned buffer could be freed while in use)"
    )]
    SoftPinUnsupported {
        /// Layer index.
        index: u64,
    },
    /// An internal invariant of the cache engine was violated (a bug; please report).
    #[error("internal cache error: {0}")]
    Cache(#[from] tinyai_cache::CacheError),
}
