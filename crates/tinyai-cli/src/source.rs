//! Positioned reads from files, with every range checked against the file length.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// An open input file and its length.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    file: File,
    length: u64,
}

impl SourceFile {
    /// Opens `path` for reading (directories are refused).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(CliError::io(format!("opening {}", path.display())))?;
        let meta = file.metadata().map_err(CliError::io(format!(
            "reading the size of {}",
            path.display()
        )))?;
        if meta.is_dir() {
            return Err(CliError::bad_input(path, "is a directory"));
        }
        Ok(SourceFile {
            path: path.to_path_buf(),
            file,
            length: meta.len(),
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Reads `length` bytes at `offset` into a new buffer; `what` names the bytes in errors.
    ///
    /// The range is checked against the file length before anything is allocated.
    pub fn read_at(&self, offset: u64, length: u64, what: &str) -> Result<Vec<u8>> {
        self.check_range(offset, length, what)?;
        let size = usize::try_from(length)
            .map_err(|_| CliError::bad_input(&self.path, format!("{what} is too large")))?;
        let mut buffer = vec![0u8; size];
        self.read_into(offset, &mut buffer, what)?;
        Ok(buffer)
    }

    /// Fills `buffer` from `offset` (checked against the file length first); `what` names the bytes in errors.
    pub fn read_into(&self, offset: u64, buffer: &mut [u8], what: &str) -> Result<()> {
        let length = buffer.len() as u64;
        self.check_range(offset, length, what)?;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buffer))
            .map_err(CliError::io(format!(
                "reading {what} ({length} bytes at offset {offset}) of {}",
                self.path.display()
            )))
    }

    /// Reads up to `length` bytes at offset 0 (fewer if the file is shorter).
    pub fn read_head(&self, length: u64) -> Result<Vec<u8>> {
        self.read_at(0, length.min(self.length), "the file header")
    }

    /// A reader over `length` bytes at `offset` (checked against the file length).
    pub fn reader_at(&self, offset: u64, length: u64, what: &str) -> Result<impl Read + '_> {
        self.check_range(offset, length, what)?;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))
            .map_err(CliError::io(format!(
                "seeking to {what} at offset {offset} of {}",
                self.path.display()
            )))?;
        Ok(file.take(length))
    }

    /// Checks that `offset..offset + length` lies within the file.
    pub fn check_range(&self, offset: u64, length: u64, what: &str) -> Result<()> {
        match offset.checked_add(length) {
            Some(end) if end <= self.length => Ok(()),
            _ => Err(CliError::bad_input(
                &self.path,
                format!(
                    "{what} at offset {offset} with length {length} extends past the end of the file ({} bytes)",
                    self.length
                ),
            )),
        }
    }
}
