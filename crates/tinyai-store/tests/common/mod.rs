//! Shared helpers for the store's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tinyai_format::fixtures::{self, FixtureSpec};
use tinyai_store::{Backend, MappedModel, StoreConfig};

#[cfg(feature = "remote")]
pub mod moto;
#[cfg(feature = "remote")]
pub mod range_server;

pub const MIB: u64 = 1 << 20;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub spec: FixtureSpec,
}

/// A uniform fixture of `layers` layers of the given sizes (alignment 4096).
pub fn fixture(seed: u64, sizes: &[u64], tensors_per_layer: u64) -> Fixture {
    let spec = FixtureSpec::uniform(seed, 4096, sizes, tensors_per_layer);
    write(spec)
}

/// A temporary directory on the same disk as the build (not tmpfs), so page-cache
/// behaviour is that of a real file system.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

pub fn write(spec: FixtureSpec) -> Fixture {
    let dir = tempdir();
    let path = dir.path().join("model.tmai");
    fixtures::write_fixture_file(&spec, &path).unwrap();
    Fixture { dir, path, spec }
}

pub fn config(budget: u64, backend: Backend) -> StoreConfig {
    StoreConfig {
        max_cache_size: budget,
        backend,
        ..StoreConfig::default()
    }
}

pub const BACKENDS: [Backend; 3] = [
    Backend::Mapped,
    Backend::Owned { direct_io: false },
    Backend::Owned { direct_io: true },
];

/// Asserts layer `index` served by `model` equals the fixture's bytes.
pub fn assert_layer_matches(model: &MappedModel, fixture: &Fixture, index: u64) {
    let guard = model.get(index).unwrap();
    let expected = fixtures::expected_layer_bytes(&fixture.spec, index)
        .unwrap()
        .unwrap();
    assert_eq!(guard.len(), expected.len(), "layer {index} length");
    assert!(guard[..] == expected[..], "layer {index} bytes differ");
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Flips one bit of byte `at` of layer `layer` in the fixture's file.
pub fn flip_byte_in_layer(fixture: &Fixture, layer: u64, at: u64) {
    let mut bytes = file_bytes(&fixture.path);
    let offset = tinyai_format::Model::parse(&bytes)
        .unwrap()
        .layer(layer)
        .unwrap()
        .offset
        + at;
    bytes[offset as usize] ^= 0x40;
    std::fs::write(&fixture.path, bytes).unwrap();
}

/// Polls `condition` for up to two seconds (background loads land meanwhile).
pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// Whether the kernel and file system under `path` drop a buffered read's
/// pages behind it (`RWF_DONTCACHE`, Linux 6.14+).
pub fn drops_behind(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` points at one local byte, written at most once by the kernel.
    unsafe { libc::preadv2(file.as_raw_fd(), &raw const iov, 1, 0, 0x80) >= 0 }
}

/// The number after `key` (e.g. `"VmLck:"`) on its line of the `/proc` file
/// `path`, without a trailing `kB`; `None` where the file or the line is missing.
pub fn proc_number(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Kilobytes of the mappings of `path` in this process that `/proc/self/smaps`
/// counts under `key` (e.g. `"FilePmdMapped:"`: mapped with one page-table
/// entry per 2 MiB).
pub fn mapped_kb(path: &Path, key: &str) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let name = path.to_string_lossy();
    let mut ours = false;
    let mut total = 0;
    for line in smaps.lines() {
        // A mapping's header line: "start-end perms offset dev inode [path]".
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            ours = line.ends_with(name.as_ref());
        } else if ours && let Some(value) = line.strip_prefix(key) {
            total += value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    total
}

/// Whether this kernel maps `path`'s page cache with 2 MiB entries when asked
/// (`MADV_HUGEPAGE`, transparent huge pages on, a file system with large
/// folios): a plain mapping of it, advised and populated, says.
pub fn maps_huge_pages(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    tinyai_store::evict_file_from_page_cache(path).unwrap();
    let file = std::fs::File::open(path).unwrap();
    let len = (file.metadata().unwrap().len() as usize) / (2 << 20) * (2 << 20);
    if len == 0 {
        return false;
    }
    // SAFETY: a fresh read-only shared mapping of a file this test owns,
    // advised, populated and unmapped here; no reference into it escapes.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return false;
        }
        let advised = libc::madvise(map, len, libc::MADV_HUGEPAGE) == 0
            && libc::madvise(map, len, libc::MADV_POPULATE_READ) == 0;
        let huge = advised && mapped_kb(path, "FilePmdMapped:") > 0;
        libc::munmap(map, len);
        huge
    }
}
