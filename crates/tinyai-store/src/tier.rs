//! The local disk tier of remote models (feature `remote`): layers fetched
//! from object storage are kept as files under `RemoteConfig::cache_dir`, so
//! that a later load — in this process or the next — reads them from disk.
//!
//! Layout: one directory per object version, named from a hash of its URL,
//! ETag and length, holding an `object` file (those three, spelled out, so a
//! hash collision is noticed and the tier is not used) and one file per
//! fetched range, `{offset:016x}-{length:016x}.layer`: the bytes, then their
//! CRC-32C (4 bytes, little-endian). An object that changed (another ETag or
//! length) gets another directory; the old one ages out.
//!
//! - A range is written to a `.partial` file beside its name, then renamed into
//!   place; a failed write removes it (and `.partial` files a crash left
//!   behind are removed when the object is next opened).
//! - A range read back must have its length and checksum, else it is removed
//!   and fetched again.
//! - Beyond `cache_max_bytes`, the least recently used ranges go first
//!   (reading a range touches its modification time).
//!
//! Every failure of the tier is logged and leaves it out of the load: the
//! tier never fails a load the network could serve.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tinyai_format::checksum::crc32c;

use crate::buffer::AlignedBuf;

/// The disk tier of one object.
#[derive(Debug)]
pub(crate) struct DiskTier {
    root: PathBuf,
    dir: PathBuf,
    max_bytes: u64,
}

/// `.partial` files older than this are a crash's leftovers.
const STALE_PARTIAL: Duration = Duration::from_secs(60);

impl DiskTier {
    /// The tier of the object `url` (`e_tag`, `size`) under `root`, or `None`
    /// (logged) where it cannot be used.
    pub(crate) fn open(
        root: &Path,
        url: &str,
        e_tag: Option<&str>,
        size: u64,
        max_bytes: u64,
    ) -> Option<DiskTier> {
        let identity = format!("{url}\n{}\n{size}\n", e_tag.unwrap_or(""));
        let name = format!(
            "{:08x}{:08x}",
            crc32c(url.as_bytes()),
            crc32c(identity.as_bytes())
        );
        let dir = root.join(name);
        let opened = (|| -> std::io::Result<bool> {
            std::fs::create_dir_all(&dir)?;
            let object = dir.join("object");
            match std::fs::read_to_string(&object) {
                Ok(existing) => return Ok(existing == identity),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            write_atomically(&dir, "object", identity.as_bytes())?;
            Ok(true)
        })();
        match opened {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(dir = %dir.display(), url, "disk tier directory belongs to another object; not using it");
                return None;
            }
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "disk tier unavailable");
                return None;
            }
        }
        let tier = DiskTier {
            root: root.to_path_buf(),
            dir,
            max_bytes,
        };
        tier.remove_stale_partials();
        Some(tier)
    }

    fn entry(&self, offset: u64, len: usize) -> PathBuf {
        self.dir.join(format!("{offset:016x}-{len:016x}.layer"))
    }

    /// Removes the range's entry, if any (its bytes failed a later check).
    pub(crate) fn remove(&self, offset: u64, len: usize) {
        let _ = std::fs::remove_file(self.entry(offset, len));
    }

    /// Whether the tier has an entry of the range's size (not checked: a load
    /// checks it).
    pub(crate) fn holds(&self, offset: u64, len: usize) -> bool {
        std::fs::metadata(self.entry(offset, len)).is_ok_and(|m| m.len() == len as u64 + 4)
    }

    /// Reads the range `offset..offset + len` into `buffer` if the tier holds
    /// it whole and unchanged; a damaged entry is removed (and `false`).
    pub(crate) fn load(&self, offset: u64, buffer: &mut AlignedBuf, len: usize) -> bool {
        let path = self.entry(offset, len);
        let Ok(file) = File::open(&path) else {
            return false;
        };
        let expected = len as u64 + 4;
        let read = file
            .metadata()
            .ok()
            .filter(|m| m.len() == expected)
            .and_then(|_| {
                crate::source::read_fully_raw(&file, 0, buffer.read_target(len))
                    .ok()
                    .filter(|&read| read == len)
            });
        let mut stored = [0u8; 4];
        use std::os::unix::fs::FileExt;
        let intact = read.is_some()
            && file.read_exact_at(&mut stored, len as u64).is_ok()
            // Every byte of the payload was just written by the read above.
            && buffer
                .as_slice()
                .get(..len)
                .is_some_and(|bytes| crc32c(bytes) == u32::from_le_bytes(stored));
        if !intact {
            tracing::warn!(path = %path.display(), "disk tier entry damaged; fetching it again");
            let _ = std::fs::remove_file(&path);
            return false;
        }
        let _ = file.set_modified(SystemTime::now());
        tracing::trace!(offset, len, "disk tier hit");
        true
    }

    /// Keeps `bytes` (the range at `offset`), then trims the tier to its size.
    pub(crate) fn store(&self, offset: u64, bytes: &[u8]) {
        let name = format!("{offset:016x}-{:016x}.layer", bytes.len());
        let mut contents = Vec::with_capacity(bytes.len() + 4);
        contents.extend_from_slice(bytes);
        contents.extend_from_slice(&crc32c(bytes).to_le_bytes());
        if let Err(error) = write_atomically(&self.dir, &name, &contents) {
            tracing::warn!(dir = %self.dir.display(), %error, "disk tier write failed");
            return;
        }
        self.trim();
    }

    /// Removes the least recently used ranges of every object under the root
    /// until the ranges take at most `max_bytes`.
    fn trim(&self) {
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let dirs = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten();
        for dir in dirs {
            let files = std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten();
            for file in files {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "layer")
                    && let Ok(metadata) = file.metadata()
                {
                    let used = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    entries.push((used, metadata.len(), path));
                }
            }
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::debug!(path = %path.display(), "disk tier evicted");
                total -= len;
            }
        }
    }

    fn remove_stale_partials(&self) {
        let files = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        for file in files {
            let path = file.path();
            let stale = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > STALE_PARTIAL);
            if stale && path.extension().is_some_and(|e| e == "partial") {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Writes `contents` to `dir/name` through a `.partial` file renamed into
/// place; on failure the `.partial` file is removed (by its drop).
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let mut partial = tempfile::Builder::new()
        .prefix(name)
        .suffix(".partial")
        .tempfile_in(dir)?;
    partial.write_all(contents)?;
    partial.as_file().sync_data()?;
    partial
        .persist(dir.join(name))
        .map(drop)
        .map_err(|error| error.error)
}
