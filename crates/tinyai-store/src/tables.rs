//! A private, owned copy of a model's header and tables, parsed once at open.

use std::path::Path;
use std::ptr::NonNull;

use tinyai_format::{
    FileKind, ForeignModel, FormatError, Grouping, Model, detect, direct::read_direct,
    limits::MAX_HEADER_SIZE, locate_tables,
};

use crate::config::Backend;
use crate::error::StoreError;
use crate::source::{Part, Source};

/// Owns the header and table bytes (a `.tmai` file) or the description of a
/// directly opened safetensors/GGUF file, and the [`Model`] view that borrows them.
///
/// Tables are read with `pread` into this private buffer (never served from the
/// mapping), so nothing the store decides depends on bytes another process can
/// change after open.
pub(crate) struct Tables {
    // Field order matters: `model` borrows from `owner` and must be dropped first.
    model: Model<'static>,
    /// What `model` borrows, from `Box::into_raw` (a raw pointer, not a
    /// `Box`, so that moving `Tables` asserts nothing about its uniqueness
    /// while `model` borrows it); freed in `Drop`.
    owner: Owner,
}

enum Owner {
    Bytes(NonNull<[u8]>),
    Foreign(NonNull<ForeignModel>),
}

// SAFETY: the owner is an immutable heap allocation owned by this value; it is
// only read (through `model`), so sharing or sending it across threads is as
// safe as for a `Box<[u8]>` or `Box<ForeignModel>` (both `Send + Sync`).
unsafe impl Send for Tables {}
// SAFETY: as above.
unsafe impl Sync for Tables {}

impl Drop for Tables {
    fn drop(&mut self) {
        // The pointer came from `Box::into_raw`/`Box::leak` in `Tables::read`
        // or `Tables::foreign` and is freed only here, once. `model`, which
        // borrows it, is never used again: it is a field of `self`, dropped
        // after this body runs, but it has no drop glue that reads the owner
        // (it is plain borrowed views).
        match self.owner {
            // SAFETY: see above (a leaked `Box<[u8]>`).
            Owner::Bytes(bytes) => drop(unsafe { Box::from_raw(bytes.as_ptr()) }),
            // SAFETY: see above (a leaked `Box<ForeignModel>`).
            Owner::Foreign(model) => drop(unsafe { Box::from_raw(model.as_ptr()) }),
        }
    }
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("kind", &self.model.kind())
            .field("layers", &self.model.layer_count())
            .finish()
    }
}

/// An error of reading a directly opened file's headers.
enum DirectError {
    Format(FormatError),
    Store(StoreError),
}

impl From<FormatError> for DirectError {
    fn from(error: FormatError) -> DirectError {
        DirectError::Format(error)
    }
}

impl From<StoreError> for DirectError {
    fn from(error: StoreError) -> DirectError {
        DirectError::Store(error)
    }
}

/// Opens `path` as whatever model it holds (detected by content: `.tmai` v2,
/// legacy v1, safetensors, a sharded safetensors index, GGUF) and reads its tables.
pub(crate) fn open(path: &Path, backend: Backend) -> Result<(Source, Tables), StoreError> {
    let main = Part::open(path, 0)?;
    let mut first = vec![0u8; main.length().min(64) as usize];
    main.read_exact_at(0, &mut first)?;
    let kind = detect(&first, main.length());
    if !matches!(
        kind,
        FileKind::Safetensors | FileKind::SafetensorsIndex | FileKind::Gguf
    ) {
        let length = main.length();
        let source = Source::from_parts(path, vec![main], length, backend)?;
        let tables = Tables::read(&source)?;
        return Ok((source, tables));
    }
    let directory = path.parent().unwrap_or(Path::new("."));
    let read = read_direct::<Part, DirectError>(
        kind,
        main,
        Part::length,
        |part, offset, buf| Ok(part.read_exact_at(offset, buf)?),
        |name| Ok(Part::open(&directory.join(name), 0)?),
        &Grouping::Default,
    );
    let (foreign, mut parts) = match read {
        Ok(read) => read,
        Err(DirectError::Store(error)) => return Err(error),
        Err(DirectError::Format(source)) => {
            return Err(StoreError::Format {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    for (part, placement) in parts.iter_mut().zip(foreign.files()) {
        part.base = placement.base;
    }
    let source = Source::from_parts(path, parts, foreign.length(), backend)?;
    Ok((source, Tables::foreign(foreign)))
}

/// Opens the `.tmai` model at `url` (feature `remote`): the first GET
/// brings the header (and the tables of a small model; a second GET reads
/// them otherwise); the tables are parsed from a private copy, as for a file.
#[cfg(feature = "remote")]
pub(crate) fn open_url(
    url: &str,
    config: &crate::RemoteConfig,
) -> Result<(Source, Tables), StoreError> {
    let source = Source::remote(crate::remote::RemoteObject::open(url, config)?);
    // Served from the open's first GET, like the tables below.
    let mut first = vec![0u8; source.length().min(64) as usize];
    source.read_exact_at(0, &mut first)?;
    let kind = detect(&first, source.length());
    if matches!(
        kind,
        FileKind::Safetensors | FileKind::SafetensorsIndex | FileKind::Gguf
    ) {
        return Err(StoreError::InvalidConfig(format!(
            "{url}: remote {kind:?} files are not supported yet (convert to .tmai)"
        )));
    }
    let tables = Tables::read(&source)?;
    Ok((source, tables))
}

impl Tables {
    fn foreign(foreign: ForeignModel) -> Tables {
        let owner = NonNull::from(Box::leak(Box::new(foreign)));
        // SAFETY: `owner` is a leaked heap allocation that nothing else
        // references; from here it is owned by the returned `Tables`, never
        // mutated, and freed only in `Tables::drop`. `model` never escapes with
        // the 'static lifetime: `Tables::model` re-borrows it for `&self`.
        let stable: &'static ForeignModel = unsafe { owner.as_ref() };
        Tables {
            model: stable.model(),
            owner: Owner::Foreign(owner),
        }
    }

    pub(crate) fn read(source: &Source) -> Result<Tables, StoreError> {
        let format_error = |source_error| StoreError::Format {
            path: source.path().to_path_buf(),
            source: source_error,
        };
        let file_length = source.length();
        let head_length = file_length.min(MAX_HEADER_SIZE as u64) as usize;
        let mut head = vec![0u8; head_length];
        source.read_exact_at(0, &mut head)?;
        let location = locate_tables(&head, file_length).map_err(format_error)?;
        let tables_length =
            usize::try_from(location.tables.end - location.tables.start).map_err(|_| {
                StoreError::InvalidConfig("tables larger than the address space".into())
            })?;
        let mut bytes = head;
        bytes.resize(head_length + tables_length, 0);
        source.read_exact_at(location.tables.start, &mut bytes[head_length..])?;
        let bytes = NonNull::from(Box::leak(bytes.into_boxed_slice()));
        // SAFETY: `bytes` is a leaked heap allocation that nothing else references;
        // from here it is owned by the returned `Tables` (or freed below on error),
        // never mutated, and freed only in `Tables::drop`. `model` never escapes
        // with the 'static lifetime: `Tables::model` re-borrows it for `&self`.
        let stable: &'static [u8] = unsafe { bytes.as_ref() };
        match Model::parse_parts(
            &stable[..head_length],
            &stable[head_length..],
            location.tables.start,
            file_length,
        ) {
            Ok(model) => Ok(Tables {
                model,
                owner: Owner::Bytes(bytes),
            }),
            Err(error) => {
                // SAFETY: from `Box::leak` above; the failed parse kept no borrow.
                drop(unsafe { Box::from_raw(bytes.as_ptr()) });
                Err(format_error(error))
            }
        }
    }

    pub(crate) fn model(&self) -> &Model<'_> {
        &self.model
    }
}

/// Run under Miri too (`cargo xtask sanitize miri`): the tables keep a
/// `Model` that borrows their own buffer, and moving them around must not
/// invalidate that borrow (an earlier version kept the buffer in a `Box`, whose
/// move asserts uniqueness under Stacked Borrows while `model` still pointed
/// into it).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::Backend;

    #[test]
    fn tables_survive_moves_of_their_owner() {
        let dir = std::env::temp_dir().join(format!("tinyai-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tables.tmai");
        let spec = tinyai_format::fixtures::FixtureSpec::uniform(5, 64, &[100, 300], 2);
        tinyai_format::fixtures::write_fixture_file(&spec, &path).expect("fixture");
        let source = Source::open(&path, Backend::Owned { direct_io: false }).expect("open");
        let tables = Tables::read(&source).expect("tables");
        // Move the tables (into a Vec, then out of it) before using the model.
        let mut moved = vec![tables];
        let tables = moved.pop().expect("one");
        let boxed = Box::new(tables);
        assert_eq!(boxed.model().layer_count(), 2);
        let names: Vec<String> = boxed
            .model()
            .layer_tensors(1)
            .expect("tensors")
            .map(|t| t.name.to_owned())
            .collect();
        assert_eq!(names.len(), 2);
        drop(boxed);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
