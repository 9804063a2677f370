//! Streaming with the kernel's read-ahead (mapped backend).
//!
//! The fastest way this project's machine found to bring a model's bytes in
//! is the kernel's own read-ahead: one `MADV_POPULATE_READ` over a layer, in
//! file order, lets the fault path read large folios and keep reading ahead
//! of the faults, pipelined across the layers of a stream. Measured in a
//! 600 MiB memory cgroup on a 1 GiB model (interleaved, same minute): 0.39–0.59
//! s per GiB that way, against 0.84–1.5 s for exact reads of the same layers
//! (`MADV_WILLNEED` on each layer, which reads small folios, then populating
//! it in parallel requests) and 0.39–0.73 s for a plain 4 MiB `pread` loop.
//!
//! The price is that read-ahead runs past the layer: up to about twice the
//! device's read-ahead size (`read_ahead_kb`) beyond the last fault, into
//! layers nothing has charged yet. The store pays it out of the streaming
//! window: the window admits layers up to its size less the reach, so
//! charged memory plus the read-ahead ahead of the stream stays within the
//! budget. Only read-aheads of a sequential stream through the window use
//! this (their next layers are the window's next layers); every other load
//! reads exactly its layer. Where a stream's front jumps (a new pass, another
//! stream), the read-ahead left past the old front is dropped.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// How far past a read the kernel's read-ahead may bring pages in for `file`:
/// twice its device's `read_ahead_kb`; `None` when that is unknown (not a
/// block device's file system, or no sysfs) or zero (read-ahead off).
pub(crate) fn reach(file: &File) -> Option<u64> {
    let device = file.metadata().ok()?.dev();
    let (major, minor) = (libc::major(device), libc::minor(device));
    let base = format!("/sys/dev/block/{major}:{minor}");
    // A whole disk has its own queue; a partition's is its disk's.
    let kib = ["queue/read_ahead_kb", "../queue/read_ahead_kb"]
        .iter()
        .find_map(|path| std::fs::read_to_string(format!("{base}/{path}")).ok())?
        .trim()
        .parse::<u64>()
        .ok()?;
    (kib > 0).then(|| kib.saturating_mul(2 << 10))
}

/// The largest folio the page cache may hold (the kernel's
/// `MAX_PAGECACHE_ORDER` is the PMD order: 512 pages): a page-cache drop only
/// takes folios lying entirely inside its range, so an eviction widens its
/// drop this far into neighbours that are not in memory.
pub(crate) fn largest_folio(page: u64) -> u64 {
    page * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads sysfs")]
    fn the_reach_is_twice_the_read_ahead_or_unknown() {
        // procfs has no block device behind it: unknown.
        let proc = File::open("/proc/self/status").expect("procfs");
        assert_eq!(reach(&proc), None);
        // The test binary lives on a disk (CI's and this project's machine):
        // twice its read_ahead_kb, when sysfs says it.
        let binary = File::open(std::env::current_exe().expect("test binary")).expect("open");
        if let Some(reach) = reach(&binary) {
            assert!(reach > 0 && reach % (2 << 10) == 0, "{reach}");
        }
        assert_eq!(largest_folio(4096), 2 << 20);
    }
}
