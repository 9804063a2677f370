//! A private, owned copy of a model's header and tables, parsed once at open.

use tinyai_format::{Model, limits::MAX_HEADER_SIZE, locate_tables};

use crate::error::StoreError;
use crate::source::Source;

/// Owns the header and table bytes and the [`Model`] view that borrows them.
///
/// Tables are read with `pread` into this private buffer (never served from the
/// mapping), so nothing the store decides depends on bytes another process can
/// change after open.
pub(crate) struct Tables {
    // Field order matters: `model` borrows from `bytes` and must be dropped first.
    model: Model<'static>,
    _bytes: Box<[u8]>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("layers", &self.model.layer_count())
            .finish()
    }
}

impl Tables {
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
        let bytes: Box<[u8]> = bytes.into_boxed_slice();
        let pointer: *const [u8] = &*bytes;
        // SAFETY: `bytes` is a heap allocation owned by the returned `Tables`; moving
        // the Box does not move its contents, it is never mutated, and it is dropped
        // after `model` (field order). `model` never escapes with the 'static
        // lifetime: `Tables::model` hands it out re-borrowed for `&self`'s lifetime.
        let stable: &'static [u8] = unsafe { &*pointer };
        let model = Model::parse_parts(
            &stable[..head_length],
            &stable[head_length..],
            location.tables.start,
            file_length,
        )
        .map_err(format_error)?;
        Ok(Tables {
            model,
            _bytes: bytes,
        })
    }

    pub(crate) fn model(&self) -> &Model<'_> {
        &self.model
    }
}
