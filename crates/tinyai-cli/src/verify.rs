//! `tmai verify`: full structural validation plus every layer checksum, with
//! bounded memory (layers are streamed through the CRC in 1 MiB chunks).
//!
//! Files without checksums succeed (exit code 0) with a summary that says so:
//! - legacy TinyAI v1 files: the structure is validated;
//! - safetensors files, sharded sets (by their `model.safetensors.index.json`) and
//!   GGUF files: the headers (and a set's index) are validated, every tensor is
//!   checked to lie inside its file, and every byte of every layer is read from
//!   the files (1 MiB at a time), so a file that cannot be read in full fails.
//!   The summary says `no checksums` (`tmai convert` adds them).

use std::io::{Read, Write};
use std::path::Path;

use tinyai_format::checksum::{crc32c, crc32c_append};
use tinyai_format::{FileKind, Model};

use crate::error::{CliError, Result};
use crate::model_file::ModelFile;
use crate::progress::Progress;

const CHUNK: usize = 1 << 20;

/// How many failing layers the error message lists before "…".
const LISTED_FAILURES: usize = 5;

/// Runs `tmai verify` on `path`; a summary line goes to `out`.
pub fn run(path: &Path, quiet: bool, out: &mut dyn Write) -> Result<()> {
    verify_file(&ModelFile::open(path)?, quiet, out)
}

/// Verifies an opened file (see the module docs); a summary line goes to `out`.
pub fn verify_file(file: &ModelFile, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let path = file.path();
    let model = file.model()?;
    let source = match file {
        ModelFile::Tmai { source, .. } => source,
        ModelFile::Direct { .. } => return verify_direct(path, file, &model, quiet, out),
    };
    let stdout_error = CliError::io("writing to stdout");
    if model.is_legacy() {
        writeln!(
            out,
            "{}: legacy TinyAI v1 file: structure valid ({} layers); it has no checksums to verify",
            path.display(),
            model.layer_count()
        )
        .map_err(stdout_error)?;
        return Ok(());
    }
    let total: u64 = model.layers().map(|layer| layer.length).sum();
    let mut progress = Progress::new("verify", total, model.layer_count(), quiet);
    let mut failures = Vec::new();
    let mut unchecked = 0u64;
    let mut buffer = vec![0u8; CHUNK];
    for layer in model.layers() {
        let name = layer.name.unwrap_or("");
        progress.step(name, layer.length);
        let Some(stored) = layer.checksum else {
            unchecked += 1;
            progress.advance(layer.length);
            continue;
        };
        let what = format!("layer {} ({name:?})", layer.index);
        let mut reader = progress.reader(source.reader_at(layer.offset, layer.length, &what)?);
        let mut crc = crc32c(&[]);
        loop {
            let count = reader.read(&mut buffer).map_err(CliError::io(format!(
                "reading {what} of {}",
                path.display()
            )))?;
            if count == 0 {
                break;
            }
            crc = crc32c_append(crc, &buffer[..count]);
        }
        if crc != stored {
            failures.push(format!(
                "layer {} {name:?} (bytes {}..+{}: stored crc32c {stored:08x}, computed {crc:08x})",
                layer.index, layer.offset, layer.length
            ));
        }
    }
    progress.finish();
    summarize(
        &path.display().to_string(),
        &model,
        failures,
        unchecked,
        out,
    )
}

/// The end of a `.tmai` verification: an error listing the first failures,
/// or the summary line.
pub(crate) fn summarize(
    path: &str,
    model: &Model<'_>,
    failures: Vec<String>,
    unchecked: u64,
    out: &mut dyn Write,
) -> Result<()> {
    if !failures.is_empty() {
        let count = failures.len();
        let mut listed = failures
            .into_iter()
            .take(LISTED_FAILURES)
            .collect::<Vec<_>>()
            .join(", ");
        if count > LISTED_FAILURES {
            listed.push_str(", …");
        }
        return Err(CliError::Corrupt {
            path: path.to_owned(),
            message: format!(
                "checksum mismatch in {count} of {} layers: {listed}",
                model.layer_count()
            ),
        });
    }
    let note = if unchecked > 0 {
        format!(" ({unchecked} layers carry no checksum)")
    } else {
        String::new()
    };
    writeln!(
        out,
        "{path}: ok: tmai {}.{}, {} layers, {} tensors, all checksums match{note}",
        model.version().major,
        model.version().minor,
        model.layer_count(),
        model.tensor_count()
    )
    .map_err(CliError::io("writing to stdout"))
}

/// Verifies a directly opened safetensors file, sharded set or GGUF file: every
/// tensor inside one file, every layer byte readable; then says there are no checksums.
fn verify_direct(
    path: &Path,
    file: &ModelFile,
    model: &Model<'_>,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let files = file.direct_files();
    for layer in model.layers() {
        for tensor in model
            .layer_tensors(layer.index)
            .map_err(CliError::format(path))?
        {
            let start = layer.offset + tensor.offset_in_layer;
            let inside = files.iter().any(|(_, placement)| {
                start >= placement.base
                    && start - placement.base <= placement.length
                    && tensor.length <= placement.length - (start - placement.base)
            });
            if !inside {
                return Err(CliError::Corrupt {
                    path: path.display().to_string(),
                    message: format!(
                        "tensor {:?} (bytes {start}..+{} of the byte space) lies outside every file",
                        tensor.name, tensor.length
                    ),
                });
            }
        }
    }
    let total: u64 = model.layers().map(|layer| layer.length).sum();
    let mut progress = Progress::new("verify", total, model.layer_count(), quiet);
    let mut buffer = vec![0u8; CHUNK];
    let mut read_bytes = 0u64;
    for layer in model.layers() {
        let name = layer.name.unwrap_or("");
        progress.step(name, layer.length);
        let (start, end) = (layer.offset, layer.offset + layer.length);
        let mut covered = 0u64;
        for (source, placement) in &files {
            let file_end = placement.base + placement.length;
            let (from, to) = (start.max(placement.base), end.min(file_end));
            if from >= to {
                continue;
            }
            let (offset, length) = (from - placement.base, to - from);
            let what = format!("layer {} ({name:?})", layer.index);
            let mut reader = progress.reader(source.reader_at(offset, length, &what)?);
            let mut remaining = length;
            while remaining > 0 {
                let want = remaining.min(CHUNK as u64) as usize;
                let count = reader
                    .read(&mut buffer[..want])
                    .map_err(CliError::io(format!(
                        "reading {what} of {}",
                        source.path().display()
                    )))?;
                if count == 0 {
                    return Err(CliError::bad_input(
                        source.path(),
                        format!(
                            "{what}: the file ended {remaining} bytes before byte {} (it was {} bytes when opened)",
                            offset + length,
                            placement.length
                        ),
                    ));
                }
                remaining -= count as u64;
            }
            covered += length;
        }
        // Bytes between two files of a set read as zero: nothing to read.
        progress.advance(layer.length - covered);
        read_bytes += covered;
    }
    progress.finish();
    let what = match model.kind() {
        FileKind::SafetensorsIndex => {
            format!("sharded safetensors set of {} files", files.len())
        }
        FileKind::Gguf => format!("GGUF v{} file", model.version().major),
        _ => "safetensors file".to_owned(),
    };
    writeln!(
        out,
        "{}: {what}: structure valid ({} layers, {} tensors, all {read_bytes} bytes of layer data read); it has no checksums to verify (safetensors/GGUF files carry none; `tmai convert` adds them)",
        path.display(),
        model.layer_count(),
        model.tensor_count()
    )
    .map_err(CliError::io("writing to stdout"))
}
