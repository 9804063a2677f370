//! `tmai verify`: full structural validation plus every layer checksum, with
//! bounded memory (layers are streamed through the CRC in 1 MiB chunks).

use std::io::{Read, Write};
use std::path::Path;

use tinyai_format::checksum::{crc32c, crc32c_append};

use crate::error::{CliError, Result};
use crate::progress::Progress;
use crate::source::SourceFile;
use crate::tmai_file::TmaiTables;

const CHUNK: usize = 1 << 20;

/// How many failing layers the error message lists before "…".
const LISTED_FAILURES: usize = 5;

/// Runs `tmai verify` on `path`; a summary line goes to `out`.
pub fn run(path: &Path, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let source = SourceFile::open(path)?;
    let tables = TmaiTables::read(&source)?;
    let model = tables.model(&source)?;
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
            path: path.display().to_string(),
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
        "{}: ok: tmai {}.{}, {} layers, {} tensors, all checksums match{note}",
        path.display(),
        model.version().major,
        model.version().minor,
        model.layer_count(),
        model.tensor_count()
    )
    .map_err(stdout_error)
}
