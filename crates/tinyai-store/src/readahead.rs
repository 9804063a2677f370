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
//!
//! A model whose whole file fits the budget has no window and no streams to
//! pay for: its loads read in 2 MiB blocks instead ([`read_in_huge_blocks`]),
//! which fills the page cache with large folios and maps them with one
//! page-table entry each: the fastest cold load measured here, ahead of
//! O_DIRECT into owned buffers.

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

/// Whether transparent huge pages may serve a mapping advised
/// `MADV_HUGEPAGE`: the kernel has them and they are not turned off
/// (`/sys/kernel/mm/transparent_hugepage/enabled` is not `[never]`).
pub(crate) fn huge_pages_on() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| !mode.contains("[never]"))
}

/// Mapped backend, for a model that fits its budget whole: advises the
/// mapping `MADV_HUGEPAGE` and `MADV_RANDOM`, so that every fault reads
/// exactly the 2 MiB-aligned block of the file around it into one large
/// folio, and maps it with one page-table entry where the mapping and the
/// file are aligned alike. Returns whether both pieces of advice took.
///
/// Measured on this project's machine (1 GiB cold model, 2 populating
/// threads, interleaved): 0.45–0.52 s against 0.79–1.24 s for
/// `MADV_WILLNEED` + `MADV_POPULATE_READ` (which reads 4 KiB folios) and
/// 0.58–1.29 s for `fio`'s O_DIRECT read of the same file. It reads up to a
/// block more than a layer on either side, which is why only a model that
/// fits whole uses it: what it reads early is never more than the model.
pub(crate) fn read_in_huge_blocks(map: &memmap2::MmapMut) -> bool {
    use memmap2::Advice;
    if !huge_pages_on() {
        return false;
    }
    let advised = map
        .advise(Advice::HugePage)
        .and_then(|()| map.advise(Advice::Random));
    if let Err(error) = advised {
        // Back to the kernel's defaults (the exact path reads as before).
        let _ = map.advise(Advice::NoHugePage);
        let _ = map.advise(Advice::Normal);
        tracing::debug!(%error, "huge-block reads unavailable");
        return false;
    }
    true
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
