//! What the store is held against: a plain sequential `read`, a plain
//! mmap-and-touch loop and a plain 4 MiB `pread` loop; and the process
//! counters every side reports (`/proc/self/io`, VmRSS).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tinyai_store::evict_file_from_page_cache;

use crate::spin;

/// Bytes this process has read from storage (`/proc/self/io` `read_bytes`).
pub fn storage_read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("read_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size of this process.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// First touch of `bytes` of fresh anonymous memory, advised to huge
/// pages as the owned backend's buffers are: the memory an `Owned` cold load
/// must fault in besides reading. Returns seconds. On a virtual machine
/// whose freed memory goes back to the host (free page reporting), a first
/// touch costs a fault on the host too, and can take longer than reading the
/// same bytes from the device; a touch made right after a touch (or a load)
/// of the same size reuses what that one freed. The cold-load rounds run one
/// before every load, so every side starts from the same memory state.
pub fn memory_touch(bytes: usize) -> f64 {
    const HUGE: usize = 2 << 20;
    let Ok(layout) = std::alloc::Layout::from_size_align(bytes.max(HUGE), HUGE) else {
        return f64::NAN;
    };
    let start = Instant::now();
    // SAFETY: the layout's size is non-zero; the allocation is written below
    // only through this pointer, from this thread, and freed once.
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        return f64::NAN;
    }
    // SAFETY: advice over this thread's own, unshared allocation; it changes
    // how the kernel backs the pages, not their contents.
    unsafe { libc::madvise(ptr.cast(), layout.size() / HUGE * HUGE, libc::MADV_HUGEPAGE) };
    for at in (0..layout.size()).step_by(4096) {
        // SAFETY: `at` is inside the allocation; nothing else refers to it.
        unsafe { ptr.add(at).write_volatile(1) };
    }
    let seconds = start.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout, freed only here.
    unsafe { std::alloc::dealloc(ptr, layout) };
    seconds
}

/// Plain sequential `read` of the whole file in 8 MiB calls, cold. Returns seconds.
pub fn plain_read(path: &Path) -> std::io::Result<f64> {
    evict_file_from_page_cache(path).map_err(std::io::Error::other)?;
    let start = Instant::now();
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 8 << 20];
    let mut sum = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(u64::from(buffer[n - 1]));
    }
    std::hint::black_box(sum);
    Ok(start.elapsed().as_secs_f64())
}

/// Per-pass seconds and storage bytes of a baseline loop.
#[derive(Debug, Default)]
pub struct Passes {
    pub seconds: Vec<f64>,
    pub read_bytes: Vec<u64>,
    pub peak_rss: u64,
}

/// A plain mmap-and-touch loop: map the file, read one byte of every page of
/// each layer in order, `compute[layer]` (if any) after each layer; no advice, no dropping.
pub fn mmap_touch(
    path: &Path,
    spans: &[(u64, u64)],
    compute: &[Duration],
    passes: usize,
) -> std::io::Result<Passes> {
    let file = File::open(path)?;
    // SAFETY: read-only mapping of a file nobody modifies during the benchmark.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    let rss_before = rss_bytes();
    let mut out = Passes::default();
    let mut sum = 0u64;
    for _ in 0..passes {
        let io = storage_read_bytes();
        let start = Instant::now();
        for (layer, &(offset, length)) in spans.iter().enumerate() {
            let bytes = &map[offset as usize..(offset + length) as usize];
            sum = sum.wrapping_add(
                bytes
                    .iter()
                    .step_by(4096)
                    .map(|&b| u64::from(b))
                    .sum::<u64>(),
            );
            spin(compute.get(layer).copied().unwrap_or_default());
            out.peak_rss = out.peak_rss.max(rss_bytes().saturating_sub(rss_before));
        }
        out.seconds.push(start.elapsed().as_secs_f64());
        out.read_bytes.push(storage_read_bytes() - io);
    }
    std::hint::black_box(sum);
    Ok(out)
}

/// A plain `pread` loop: each layer read in order with 4 MiB `pread`s into one
/// reused buffer (buffered I/O, the kernel's read-ahead), `compute[layer]` (if
/// any) after each layer.
pub fn pread_loop(
    path: &Path,
    spans: &[(u64, u64)],
    compute: &[Duration],
    passes: usize,
) -> std::io::Result<Passes> {
    const CHUNK: u64 = 4 << 20;
    let file = File::open(path)?;
    let mut buffer = vec![0u8; CHUNK as usize];
    let rss_before = rss_bytes();
    let mut out = Passes::default();
    let mut sum = 0u64;
    for _ in 0..passes {
        let io = storage_read_bytes();
        let start = Instant::now();
        for (layer, &(offset, length)) in spans.iter().enumerate() {
            let mut done = 0;
            while done < length {
                let want = (length - done).min(CHUNK) as usize;
                file.read_exact_at(&mut buffer[..want], offset + done)?;
                sum = sum.wrapping_add(u64::from(buffer[want - 1]));
                done += want as u64;
            }
            spin(compute.get(layer).copied().unwrap_or_default());
            out.peak_rss = out.peak_rss.max(rss_bytes().saturating_sub(rss_before));
        }
        out.seconds.push(start.elapsed().as_secs_f64());
        out.read_bytes.push(storage_read_bytes() - io);
    }
    std::hint::black_box(sum);
    Ok(out)
}
