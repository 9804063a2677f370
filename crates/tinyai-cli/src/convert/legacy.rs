//! Upgrading legacy TinyAI v1 files: each layer becomes one opaque layer named
//! `layer.{i}` (bytes copied unchanged with `write_raw`, precision preserved),
//! the model name becomes `general.name`, and `source.format` is `tmai-v1`.

use std::io::Read;
use std::path::Path;

use tinyai_format::{FileWriter, WriterOptions};

use super::{ConvertOptions, Summary};
use crate::error::{CliError, Result};
use crate::progress::Progress;
use crate::source::SourceFile;
use crate::tmai_file::TmaiTables;

/// Converts the legacy file `source` to `output`.
pub fn convert(source: &SourceFile, output: &Path, options: &ConvertOptions) -> Result<Summary> {
    let tables = TmaiTables::read(source)?;
    let model = tables.model(source)?;
    if !model.is_legacy() {
        return Err(CliError::bad_input(
            source.path(),
            "is already a current-version .tmai file; there is nothing to convert",
        ));
    }
    let output_error = |error| CliError::format(output)(error);
    let mut file = FileWriter::create(
        output,
        WriterOptions {
            alignment: options.alignment,
        },
    )
    .map_err(output_error)?;
    file.writer()
        .add_metadata("source.format", "tmai-v1")
        .map_err(output_error)?;
    for (key, value) in model.metadata() {
        if key != "source.format" {
            file.writer()
                .add_metadata(key, value)
                .map_err(output_error)?;
        }
    }
    let total: u64 = model.layers().map(|layer| layer.length).sum();
    let mut progress = Progress::new("convert", total, model.layer_count(), options.quiet);
    let mut buffer = vec![0u8; 1 << 20];
    let mut layers = 0u64;
    for layer in model.layers() {
        let name = format!("layer.{}", layer.index);
        progress.step(&name, layer.length);
        let mut writer = file.writer().begin_layer(&name).map_err(output_error)?;
        let precision = u16::try_from(layer.precision_bits).unwrap_or(u16::MAX);
        writer.set_precision_bits(precision).map_err(|error| {
            CliError::bad_input(
                source.path(),
                format!("legacy layer {}: {error}", layer.index),
            )
        })?;
        let what = format!("legacy layer {}", layer.index);
        let mut reader = progress.reader(source.reader_at(layer.offset, layer.length, &what)?);
        loop {
            let count = reader.read(&mut buffer).map_err(CliError::io(format!(
                "reading {what} of {}",
                source.path().display()
            )))?;
            if count == 0 {
                break;
            }
            writer.write_raw(&buffer[..count]).map_err(output_error)?;
        }
        writer.finish().map_err(output_error)?;
        layers += 1;
    }
    progress.finish();
    file.commit().map_err(output_error)?;
    Ok(Summary {
        format: "tmai-v1",
        layers,
        tensors: 0,
        bytes: total,
    })
}
