//! Bytes of a layer without loading the layer: for engines that need a few
//! rows of a table far larger than their budget (a vocabulary embedding, an
//! LM head gathered by token), and for checking a layer's checksum before
//! using it that way.
//!
//! Nothing here touches the cache: the bytes are read from the file with
//! positioned reads into the caller's buffer (served from the OS page cache
//! when the pages are there), never charged against `max_cache_size`, and
//! counted in [`crate::Stats::bytes_read`]. Unless
//! [`crate::StoreConfig::keep_page_cache`] is set, the whole pages read this
//! way are dropped from the page cache afterwards when their layer is not in
//! memory, so that gathering from a table larger than the budget does not
//! leave it resident uncharged.

use std::sync::atomic::Ordering;

use crate::error::StoreError;
use crate::model::MappedModel;

impl MappedModel {
    /// Reads `buf.len()` bytes of tensor `name` of layer `index`, starting
    /// `start` bytes into the tensor, from the file: the layer is neither
    /// loaded nor charged, and pinning, priorities and prefetch are untouched.
    ///
    /// This is how an engine gathers rows of a table larger than its budget
    /// (row `r` of a row-major `[rows, width]` tensor of `T` starts at
    /// `r * width * size_of::<T>()`). The file's bytes are returned even where
    /// a C caller wrote into the mapping (those writes are private to the
    /// mapping); checksums are not checked here (see
    /// [`MappedModel::verify_layer_from_file`]).
    ///
    /// # Errors
    /// [`StoreError::LayerOutOfRange`], [`StoreError::NoSuchTensor`],
    /// [`StoreError::View`] when `start..start + buf.len()` is not inside the
    /// tensor, [`StoreError::FileChanged`] or [`StoreError::Io`] when the read
    /// fails.
    pub fn read_tensor_bytes(
        &self,
        index: u64,
        name: &str,
        start: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        let range = self.tensor_range(index, name)?;
        let tensor_len = (range.end - range.start) as u64;
        let end = start.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > tensor_len) {
            return Err(StoreError::View {
                layer: index,
                what: name.to_owned(),
                reason: format!(
                    "bytes {start}..{} requested of a {tensor_len}-byte tensor",
                    start.saturating_add(buf.len() as u64)
                ),
            });
        }
        let (layer_offset, _) = self.shared.span(index);
        self.shared
            .read_uncharged(index, layer_offset + range.start as u64 + start, buf)?;
        self.shared
            .counters
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Verifies layer `index`'s checksum against the file, read in 1 MiB
    /// chunks: the layer is neither loaded nor charged, so this works for a
    /// layer larger than `max_cache_size` (before gathering from it with
    /// [`MappedModel::read_tensor_bytes`]). A layer without a checksum (legacy
    /// v1) passes. Counts in [`crate::Stats::checksums_verified`] /
    /// [`crate::Stats::checksum_failures`].
    ///
    /// # Errors
    /// [`StoreError::LayerOutOfRange`], a checksum mismatch
    /// ([`StoreError::Format`]), [`StoreError::FileChanged`] or
    /// [`StoreError::Io`].
    pub fn verify_layer_from_file(&self, index: u64) -> Result<(), StoreError> {
        self.shared.layer_id(index)?;
        self.shared.verify_from_file(index)
    }
}
