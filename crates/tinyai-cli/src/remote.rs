//! `tmai inspect URL` and `tmai verify URL` for a `.tmai` model in object
//! storage (`s3://bucket/key`, `http(s)://host/path`), through the store's
//! remote source: endpoint and credentials from the `AWS_*` environment
//! variables (see `tinyai_store::RemoteConfig`). Inspect fetches the header
//! and tables only; verify fetches each layer once, under a small budget.

use std::io::Write;
use std::path::Path;

use tinyai_format::FormatError;
use tinyai_store::{MappedModel, StoreConfig, StoreError};

use crate::error::{CliError, Result};
use crate::model_file::DataFile;
use crate::progress::Progress;

/// The URL `path` names, if it names one.
pub fn url(path: &Path) -> Option<&str> {
    path.to_str().filter(|p| {
        ["s3://", "http://", "https://"]
            .iter()
            .any(|s| p.starts_with(s))
    })
}

fn open(url: &str) -> Result<MappedModel> {
    let config = StoreConfig {
        // Enough for the largest layer; verify reads each layer once.
        max_cache_size: 1 << 30,
        prefetch_enabled: false,
        ..StoreConfig::default()
    };
    MappedModel::open_url(url, config).map_err(|error| store_error(url, error))
}

fn store_error(url: &str, error: StoreError) -> CliError {
    match error {
        StoreError::Format { source, .. } => CliError::Format {
            path: url.to_owned(),
            source,
        },
        StoreError::Io { source, .. } => CliError::Io {
            context: format!("reading {url}"),
            source,
        },
        other => CliError::BadInput {
            path: url.to_owned(),
            message: other.to_string(),
        },
    }
}

/// `tmai inspect URL [--json]`.
pub fn inspect(url: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let model = open(url)?;
    let files = [DataFile {
        path: Path::new(url),
        base: 0,
        length: model.format().file_length(),
    }];
    crate::inspect::write(Path::new(url), model.format(), &files, json, out)
}

/// `tmai verify URL`: every layer's CRC-32C.
pub fn verify(url: &str, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let model = open(url)?;
    let format = model.format();
    let total: u64 = format.layers().map(|layer| layer.length).sum();
    let mut progress = Progress::new("verify", total, format.layer_count(), quiet);
    let mut failures = Vec::new();
    let mut unchecked = 0u64;
    for layer in format.layers() {
        let name = layer.name.unwrap_or("");
        progress.step(name, layer.length);
        match model.verify_layer(layer.index) {
            Ok(()) => {}
            Err(StoreError::Format {
                source: FormatError::NoChecksum { .. },
                ..
            }) => unchecked += 1,
            Err(StoreError::Format {
                source: error @ FormatError::ChecksumMismatch { .. },
                ..
            }) => failures.push(format!("layer {} {name:?} ({error})", layer.index)),
            Err(error) => return Err(store_error(url, error)),
        }
        progress.advance(layer.length);
        // Each layer is read once: let it go.
        let _ = model.release(layer.index);
    }
    progress.finish();
    crate::verify::summarize(url, format, failures, unchecked, out)
}
