//! Opening a `.tmai` file with bounded memory: only the header and the tables
//! are read, never the layer data.

use tinyai_format::{Model, limits};

use crate::error::{CliError, Result};
use crate::source::SourceFile;

/// The header and table bytes of a `.tmai` file, from which a [`Model`] is parsed.
#[derive(Debug)]
pub struct TmaiTables {
    head: Vec<u8>,
    tables: Vec<u8>,
    tables_offset: u64,
    file_length: u64,
}

impl TmaiTables {
    /// Reads the header (at most 4 KiB) and the tables of `source`.
    pub fn read(source: &SourceFile) -> Result<Self> {
        let head = source.read_head(limits::MAX_HEADER_SIZE as u64)?;
        let location =
            Model::locate_tables(&head, source.len()).map_err(CliError::format(source.path()))?;
        let tables = source.read_at(
            location.tables.start,
            location.tables.end - location.tables.start,
            "the tables",
        )?;
        Ok(TmaiTables {
            head,
            tables,
            tables_offset: location.tables.start,
            file_length: source.len(),
        })
    }

    /// Parses and validates the model (everything but the layer checksums).
    pub fn model(&self, source: &SourceFile) -> Result<Model<'_>> {
        Model::parse_parts(
            &self.head,
            &self.tables,
            self.tables_offset,
            self.file_length,
        )
        .map_err(CliError::format(source.path()))
    }
}
