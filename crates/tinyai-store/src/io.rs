//! The I/O pipeline under the slot machinery: how one layer's bytes come off
//! the device.
//!
//! A load is split into `depth` requests (of [`MIN_CHUNK`] to [`CHUNK`]
//! bytes, see [`Tuner::request_size`]), issued in file order and kept
//! outstanding `depth` at a time on a
//! process-wide pool of [`MAX_DEPTH`] I/O workers (threads that block in
//! `pread` or `MADV_POPULATE_READ`; they cost no CPU while they wait). One
//! request at a time — a single large `pread` — leaves the device idle between
//! the kernel's read-ahead windows: on this project's machine a 4 MiB-layer
//! cold load through one buffered `pread` per layer ran at 0.35× of sixteen
//! 1 MiB `O_DIRECT` requests in flight, and eight to sixteen requests in
//! flight reached 0.9–1.1× of it (`cargo xtask bench store` measures the
//! backends against the device).
//!
//! `depth` is sized from what the device shows (Little's law): bytes in flight
//! = bandwidth × latency, with bandwidth the recent peak throughput of
//! multi-request loads and latency the recent fastest request's service
//! time, times [`HEADROOM`] so that the device's queue never runs dry between
//! completions; clamped to `MIN_DEPTH..=MAX_DEPTH`, [`INITIAL_DEPTH`] before
//! anything was measured. The same estimate sizes how far the prefetch
//! pipeline advises ahead ([`Tuner::bytes_in_flight`]).
//!
//! How this relates to `prefetch_threads` (TinyAI's meaning: threads that
//! prefetch): each prefetch thread (and each thread that misses) runs one
//! layer load at a time, and each load keeps up to `depth` requests
//! outstanding on the shared I/O workers, so more prefetch threads overlap
//! more layers, not more requests per layer; the workers bound the requests
//! in flight in the process to [`MAX_DEPTH`] per load and their number overall.
//!
//! Buffered owned loads are the exception: where the kernel can drop a
//! read's pages behind it (`RWF_DONTCACHE`), a load reads its layer in file
//! order from its own thread, 4 MiB at a time, and the kernel's read-ahead
//! keeps the device busy — it pipelines across reads and across the loads of
//! consecutive layers, which requests split over workers defeat (interleaved
//! on this project's machine, in a 600 MiB memory cgroup: 4 MiB drop-behind
//! reads in order took 0.41–0.66 s per GiB, eight 512 KiB requests in flight
//! per layer 1.04–1.25 s). Their reads end on 4 MiB multiples of the file
//! offset (see `source.rs`'s `SEQUENTIAL_CHUNK`), the last one of a layer
//! running on into a carry for the next layer (`crate::carry`); a load that
//! does not continue a stream reads exactly its layer. Into a fresh buffer, an I/O
//! worker faults its huge pages in from the far end while the load reads from
//! the near one ([`with_pages_faulted_ahead`]): the kernel zeroes a fresh
//! page at its first touch, which in one thread is serial with the copy.
//! The README's "Against the device" has the backend's current cold-load
//! figures.
//!
//! Owned buffers come from a [`BufferPool`](crate::buffer::BufferPool):
//! buffers of evicted layers are kept for the next load of the same size (no
//! page faults, no zeroing, no `mmap`/`munmap` per load), as long as pooled
//! plus charged memory stays within the budget.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::buffer::{HUGE_PAGE, ReadTarget};

/// Largest request, in bytes.
pub(crate) const CHUNK: u64 = 1 << 20;
/// Smallest request a layer is split into, in bytes (a multiple of any page
/// size up to 64 KiB, as `O_DIRECT` needs).
pub(crate) const MIN_CHUNK: u64 = 256 << 10;
/// Most requests one load keeps in flight (and the number of I/O workers).
pub(crate) const MAX_DEPTH: usize = 16;
/// Fewest requests one multi-request load keeps in flight.
pub(crate) const MIN_DEPTH: usize = 4;
/// Requests in flight before anything was measured.
pub(crate) const INITIAL_DEPTH: usize = 8;
/// Bytes in flight = bandwidth × latency × this.
pub(crate) const HEADROOM: u64 = 4;

/// Stack of an I/O worker: they only issue system calls (`pread`,
/// `madvise`) and record timings, so a small stack does; sixteen default
/// 2 MiB stacks would take 32 MiB of address space, which a process under
/// an address-space limit (`RLIMIT_AS`) needs for layers.
const WORKER_STACK: usize = 256 << 10;

/// The process's I/O workers, started on first use; `None` if no thread could
/// be started (loads then issue their requests one after another).
fn workers() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(MAX_DEPTH)
            .stack_size(WORKER_STACK)
            .thread_name(|i| format!("tinyai-io-{i}"))
            .build()
            .map_err(|error| {
                tracing::warn!(%error, "cannot start I/O workers; reading one request at a time");
            })
            .ok()
    })
    .as_ref()
}

/// The device's recent bandwidth and latency, as loads measured them.
#[derive(Debug, Default)]
pub(crate) struct Tuner {
    /// Peak throughput of recent multi-request loads, bytes per second
    /// (0: not measured yet). Decays by a quarter towards each new sample.
    bandwidth: AtomicU64,
    /// Fastest request's service time in recent loads, nanoseconds (0: not
    /// measured yet); moving average, a quarter per sample.
    latency_ns: AtomicU64,
}

impl Tuner {
    /// Requests one load keeps in flight now.
    pub(crate) fn depth(&self) -> usize {
        let in_flight = self.bytes_in_flight();
        if in_flight == 0 {
            return INITIAL_DEPTH;
        }
        usize::try_from(in_flight.div_ceil(CHUNK))
            .unwrap_or(MAX_DEPTH)
            .clamp(MIN_DEPTH, MAX_DEPTH)
    }

    /// The request size for a load of `len` bytes: the layer split into
    /// [`depth`](Tuner::depth) requests, so one load alone keeps the device's
    /// queue as deep as it needs (an `O_DIRECT` read has no kernel read-ahead
    /// to do it), within [`MIN_CHUNK`]..=[`CHUNK`], in multiples of 64 KiB.
    pub(crate) fn request_size(&self, len: u64) -> u64 {
        let depth = self.depth() as u64;
        len.div_ceil(depth)
            .next_multiple_of(64 << 10)
            .clamp(MIN_CHUNK, CHUNK)
    }

    /// Bytes the device needs in flight to stay busy (bandwidth × latency ×
    /// [`HEADROOM`]); 0 before anything was measured.
    pub(crate) fn bytes_in_flight(&self) -> u64 {
        let bandwidth = self.bandwidth.load(Ordering::Relaxed);
        let latency = self.latency_ns.load(Ordering::Relaxed);
        if bandwidth == 0 || latency == 0 {
            return 0;
        }
        let product = u128::from(bandwidth) * u128::from(latency) / 1_000_000_000;
        u64::try_from(product.saturating_mul(u128::from(HEADROOM))).unwrap_or(u64::MAX)
    }

    /// (bandwidth in bytes/s, latency) as measured so far.
    pub(crate) fn estimate(&self) -> (u64, Duration) {
        (
            self.bandwidth.load(Ordering::Relaxed),
            Duration::from_nanos(self.latency_ns.load(Ordering::Relaxed)),
        )
    }

    /// Notes a load of `bytes` in `requests` requests that took `elapsed`,
    /// whose fastest request took `fastest`.
    fn record(&self, bytes: u64, requests: usize, elapsed: Duration, fastest: Duration) {
        if requests < 2 {
            return;
        }
        self.record_reads(bytes, elapsed, fastest);
    }

    /// Notes `bytes` read in order by one thread in `elapsed`, the fastest
    /// read taking `fastest` (the kernel's read-ahead kept the device's
    /// queue full, so the throughput is the device's).
    pub(crate) fn record_reads(&self, bytes: u64, elapsed: Duration, fastest: Duration) {
        if elapsed.is_zero() {
            return;
        }
        let throughput =
            u64::try_from(u128::from(bytes) * 1_000_000_000 / elapsed.as_nanos().max(1))
                .unwrap_or(u64::MAX);
        // Racing updates may lose a sample; the estimate is advisory.
        let old = self.bandwidth.load(Ordering::Relaxed);
        let new = if throughput >= old {
            throughput
        } else {
            old - (old - throughput) / 4
        };
        self.bandwidth.store(new, Ordering::Relaxed);
        let fastest = u64::try_from(fastest.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.latency_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            fastest
        } else {
            old - old / 4 + fastest / 4
        };
        self.latency_ns.store(new, Ordering::Relaxed);
    }
}

/// Runs `work` on every request, in order, keeping up to `tuner.depth()` in
/// flight on the I/O workers; returns the first error (requests not started
/// by then are skipped). `bytes` is the load's size, for the tuner.
pub(crate) fn run_requests<T, E>(
    tuner: &Tuner,
    requests: Vec<T>,
    bytes: u64,
    work: impl Fn(T) -> Result<(), E> + Sync,
) -> Result<(), E>
where
    T: Send,
    E: Send,
{
    let count = requests.len();
    let depth = tuner.depth().min(count);
    let pool = workers().filter(|_| depth > 1);
    let Some(pool) = pool else {
        return requests.into_iter().try_for_each(work);
    };
    let started = Instant::now();
    let queue = Mutex::new(requests.into_iter());
    let failed: Mutex<Option<E>> = Mutex::new(None);
    let fastest = AtomicU64::new(u64::MAX);
    pool.scope(|scope| {
        for _ in 0..depth {
            scope.spawn(|_| {
                loop {
                    if failed.lock().map_or(true, |slot| slot.is_some()) {
                        return;
                    }
                    // Taken under the queue's lock: requests start in file order.
                    let next = queue.lock().ok().and_then(|mut queue| queue.next());
                    let Some(request) = next else { return };
                    let began = Instant::now();
                    let result = work(request);
                    let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    fastest.fetch_min(took, Ordering::Relaxed);
                    if let Err(error) = result {
                        if let Ok(mut slot) = failed.lock() {
                            slot.get_or_insert(error);
                        }
                        return;
                    }
                }
            });
        }
    });
    let failed = failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(error) = failed {
        return Err(error);
    }
    tuner.record(
        bytes,
        count,
        started.elapsed(),
        Duration::from_nanos(fastest.load(Ordering::Relaxed)),
    );
    Ok(())
}

/// Runs `read` on this thread (a load filling a fresh buffer, `target`, in
/// order, storing in `reader_at` the offset in the target where each of its
/// reads starts) while an I/O worker faults the target's huge pages in from
/// its end backwards, until it reaches the page after the one the reader
/// is in. A fresh buffer's pages are zeroed by the kernel at their first
/// touch; in the reader's copy that work is serial with the copy itself,
/// and on this project's virtual machine (whose freed memory goes back to
/// the host) it dominated buffered cold loads: `clear_page_erms` took 63% of
/// a profile, and buffered loads ran at half the speed of `O_DIRECT` ones,
/// whose requests fault their pages on several workers. The two meet once,
/// near the middle of the layer, so they rarely fault the same page (when
/// they do, the kernel serialises the two faults; nothing is lost). The
/// read returns once the worker has stopped: a worker still busy with other
/// loads' requests picks the job up late, finds the read done and stops at
/// once.
/// Without `enabled` (a buffer that is not fresh, or not of huge pages),
/// `read` runs alone.
pub(crate) fn with_pages_faulted_ahead<R>(
    target: ReadTarget,
    enabled: bool,
    read: impl FnOnce(&AtomicUsize) -> R,
) -> R {
    let reader_at = AtomicUsize::new(0);
    let pool = workers().filter(|_| enabled && target.len > HUGE_PAGE && !cfg!(miri));
    let Some(pool) = pool else {
        return read(&reader_at);
    };
    pool.in_place_scope(|scope| {
        scope.spawn(|_| fault_in_backwards(target, &reader_at));
        let result = read(&reader_at);
        reader_at.store(usize::MAX, Ordering::Relaxed);
        result
    })
}

/// Faults `target`'s huge pages in, last first, while they lie at least a
/// huge page past `reader_at`; stops at the first refusal.
fn fault_in_backwards(target: ReadTarget, reader_at: &AtomicUsize) {
    for page in (1..target.len.div_ceil(HUGE_PAGE)).rev() {
        let start = page * HUGE_PAGE;
        if start < reader_at.load(Ordering::Relaxed).saturating_add(HUGE_PAGE) {
            return;
        }
        let len = HUGE_PAGE.min(target.len - start);
        if let Err(error) = target.piece(start, len).fault_in() {
            tracing::trace!(%error, "MADV_POPULATE_WRITE refused; the reader faults its pages");
            return;
        }
    }
}

/// `(offset, length)` of the requests covering `offset..offset + len`, each
/// `size` bytes but the last.
pub(crate) fn chunks(offset: u64, len: u64, size: u64) -> Vec<(u64, u64)> {
    let size = size.max(1);
    let mut requests = Vec::with_capacity(usize::try_from(len.div_ceil(size)).unwrap_or(0));
    let mut at = 0;
    while at < len {
        let n = size.min(len - at);
        requests.push((offset + at, n));
        at += n;
    }
    requests
}

/// `offset..offset + len` in requests that end on multiples of `size` in the
/// byte space (the first and last may be shorter), in order.
pub(crate) fn aligned_chunks(offset: u64, len: u64, size: u64) -> Vec<(u64, u64)> {
    let size = size.max(1);
    let end = offset.saturating_add(len);
    let mut requests = Vec::new();
    let mut at = offset;
    while at < end {
        let stop = (at / size).saturating_add(1).saturating_mul(size).min(end);
        requests.push((at, stop - at));
        at = stop;
    }
    requests
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn aligned_requests_end_on_multiples_of_their_size() {
        assert_eq!(aligned_chunks(10, 0, 8), vec![]);
        assert_eq!(aligned_chunks(10, 4, 8), vec![(10, 4)]);
        assert_eq!(aligned_chunks(6, 13, 8), vec![(6, 2), (8, 8), (16, 3)]);
        assert_eq!(aligned_chunks(8, 16, 8), vec![(8, 8), (16, 8)]);
    }

    #[test]
    fn requests_cover_the_range_in_order() {
        assert_eq!(chunks(10, 0, CHUNK), vec![]);
        assert_eq!(chunks(10, 5, CHUNK), vec![(10, 5)]);
        assert_eq!(
            chunks(0, 2 * CHUNK + 3, CHUNK),
            vec![(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, 3)]
        );
    }

    #[test]
    fn a_layer_is_split_into_as_many_requests_as_the_depth() {
        let tuner = Tuner::default();
        // Depth 8 before measuring: 4 MiB in 512 KiB requests.
        assert_eq!(tuner.request_size(4 << 20), 512 << 10);
        // Never below the floor, never above a mebibyte.
        assert_eq!(tuner.request_size(4096), MIN_CHUNK);
        assert_eq!(tuner.request_size(1 << 30), CHUNK);
        // Ragged sizes round up to 64 KiB.
        assert_eq!(tuner.request_size(3 << 20) % (64 << 10), 0);
    }

    #[test]
    fn depth_follows_bandwidth_times_latency() {
        let tuner = Tuner::default();
        assert_eq!(tuner.depth(), INITIAL_DEPTH);
        // 1 GB/s and 2 ms: 2 MB in flight, × 4 headroom = 8 MB → 8 requests.
        tuner.record(
            64 << 20,
            64,
            Duration::from_nanos((64u64 << 20) * 1_000_000_000 / 1_000_000_000),
            Duration::from_millis(2),
        );
        let (bandwidth, latency) = tuner.estimate();
        assert_eq!(bandwidth, 1_000_000_000);
        assert_eq!(latency, Duration::from_millis(2));
        assert_eq!(tuner.depth(), 8);
        // A fast device with short latency: the floor.
        let fast = Tuner::default();
        fast.record(
            1 << 30,
            1024,
            Duration::from_millis(100),
            Duration::from_micros(50),
        );
        assert_eq!(fast.depth(), MIN_DEPTH);
        // A slow, long-latency one (network storage): the ceiling.
        let far = Tuner::default();
        far.record(
            1 << 30,
            1024,
            Duration::from_millis(1000),
            Duration::from_millis(40),
        );
        assert_eq!(far.depth(), MAX_DEPTH);
        // A single request says nothing about the queue.
        let single = Tuner::default();
        single.record(
            1 << 20,
            1,
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        assert_eq!(single.depth(), INITIAL_DEPTH);
    }

    /// Bytes of `target` resident in memory (`mincore`); `None` where it
    /// cannot be asked.
    fn resident(target: ReadTarget) -> Option<usize> {
        let page = crate::source::page_size() as usize;
        let mut vector = vec![0u8; target.len.div_ceil(page)];
        // SAFETY: `target` is page-aligned and inside a live mapping of the
        // test's own; `vector` has one byte per page of it. mincore reads no
        // byte of the range.
        let result =
            unsafe { libc::mincore(target.ptr.cast(), target.len, vector.as_mut_ptr().cast()) };
        (result == 0).then(|| vector.iter().filter(|&&v| v & 1 != 0).count() * page)
    }

    /// A fresh buffer's huge pages past the one its reader is in are
    /// faulted in by an I/O worker while the reader works (before, the
    /// reader's own copy faulted every page, serially); the reader's page is
    /// left to it.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "madvise, mincore and the rayon I/O workers are foreign to Miri"
    )]
    fn a_fresh_buffer_is_faulted_in_ahead_of_its_reader() {
        const LEN: usize = 16 << 20;
        if !cfg!(target_os = "linux") {
            tinyai_format::fixtures::skip("pages faulted ahead", "not Linux");
            return;
        }
        let mut probe = crate::buffer::AlignedBuf::for_reading(4096, 4096, 4096).unwrap();
        if let Err(error) = probe.read_target(4096).fault_in() {
            tinyai_format::fixtures::skip(
                "pages faulted ahead",
                &format!("MADV_POPULATE_WRITE refused ({error}): a kernel before 5.14"),
            );
            return;
        }
        let mut buffer = crate::buffer::AlignedBuf::for_reading(LEN, LEN, 4096).unwrap();
        let target = buffer.read_target(LEN);
        let ahead = target.piece(HUGE_PAGE, LEN - HUGE_PAGE);
        let Some(before) = resident(ahead) else {
            tinyai_format::fixtures::skip("pages faulted ahead", "mincore refused");
            return;
        };
        assert_eq!(before, 0, "a fresh buffer is not resident before its read");
        let seen = with_pages_faulted_ahead(target, true, |reader_at| {
            reader_at.store(0, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let now = resident(ahead).unwrap_or(0);
                if now == ahead.len || Instant::now() > deadline {
                    return now;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        assert_eq!(
            seen, ahead.len,
            "the pages past the reader's were not faulted in while it read"
        );
        assert_eq!(
            resident(target.piece(0, HUGE_PAGE)),
            Some(0),
            "the reader's own huge page was faulted in for it"
        );
    }

    /// Faulting pages in ahead never changes a byte the reader wrote, however
    /// the two interleave.
    #[test]
    #[cfg_attr(miri, ignore = "madvise and the rayon I/O workers are foreign to Miri")]
    fn faulting_pages_in_keeps_what_the_reader_wrote() {
        const LEN: usize = 12 << 20;
        for round in 0..4u8 {
            let mut buffer = crate::buffer::AlignedBuf::for_reading(LEN, LEN, 4096).unwrap();
            let target = buffer.read_target(LEN);
            with_pages_faulted_ahead(target, true, |reader_at| {
                for at in (0..LEN).step_by(64 << 10) {
                    reader_at.store(at, Ordering::Relaxed);
                    let piece = target.piece(at, 64 << 10);
                    // SAFETY: inside the buffer this test owns; no reference
                    // to its bytes exists while the read runs.
                    unsafe {
                        std::ptr::write_bytes(piece.ptr, round ^ (at >> 16) as u8, piece.len)
                    };
                }
            });
            let bytes = buffer.as_slice();
            for at in (0..LEN).step_by(64 << 10) {
                let expected = round ^ (at >> 16) as u8;
                assert!(
                    bytes[at..at + (64 << 10)].iter().all(|&b| b == expected),
                    "round {round}: bytes at {at} changed after the reader wrote them"
                );
            }
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "starts the rayon I/O workers: crossbeam-epoch (rayon's deque) breaks Stacked Borrows; this module has no unsafe"
    )]
    fn requests_run_all_and_stop_at_the_first_error() {
        let tuner = Tuner::default();
        let done = AtomicU64::new(0);
        run_requests(&tuner, (0..100u64).collect(), 100, |i| {
            done.fetch_add(i, Ordering::Relaxed);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(done.load(Ordering::Relaxed), (0..100).sum::<u64>());
        let result = run_requests(&tuner, (0..100u64).collect(), 100, |i| {
            if i == 3 { Err(i) } else { Ok(()) }
        });
        assert_eq!(result, Err(3));
    }
}
