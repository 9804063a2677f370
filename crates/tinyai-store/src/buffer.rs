//! Owned layers' memory: [`AlignedBuf`] (an aligned allocation a load fills
//! through raw pointers and C callers may write through), [`ReadTarget`] (the
//! part of one a request writes) and [`BufferPool`] (buffers of evicted
//! layers kept for the next load of the same size).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of a transparent huge page on the platforms that matter here
/// (x86-64 and aarch64 with 4 KiB pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// A buffer whose first byte is aligned to `align` (a heap allocation, or
/// from [`HUGE_PAGE`] bytes up an anonymous mapping of its own), owned through
/// a raw pointer: C callers of the owned backend may write into a layer's
/// bytes (TinyAI's API hands out `void *`), so the bytes are never owned
/// through a Rust reference, and the pointer handed out
/// ([`as_ptr`](AlignedBuf::as_ptr)) carries the allocation's write
/// permission. Rust code makes a `&[u8]` of them ([`as_slice`](AlignedBuf::as_slice))
/// only where no C caller can hold a pointer: while loading and verifying,
/// before the layer is published, and for guards of Rust callers (the C
/// library never makes one of a layer it has handed out; see
/// `tinyai-ffi`'s `Handle`).
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    /// The allocation's size and alignment (size 0: nothing allocated, `ptr`
    /// dangling).
    layout: std::alloc::Layout,
    len: usize,
    /// A buffer of [`HUGE_PAGE`] bytes or more (Linux): its own anonymous
    /// mapping, `ptr` its first huge-page boundary; `None`: `ptr` is a heap
    /// allocation of `layout`. Never read or written through this handle
    /// (no reference to the bytes is made from it): it only keeps the
    /// mapping alive and unmaps it on drop.
    mapping: Option<memmap2::MmapMut>,
}

// SAFETY: the buffer owns its allocation exclusively (no other handle to it
// exists; the mapping handle of a large one is only kept to unmap it); it
// holds plain bytes with no thread affinity.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access from several threads only reads through `as_slice`
// (plain bytes) or hands out the raw pointer; writes through that pointer are
// the C caller's, under the contract above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `capacity` usable bytes, of which the first `len` are
    /// the payload; `None` if the allocation fails or the sizes are invalid.
    #[cfg(test)]
    fn zeroed(len: usize, capacity: usize, align: usize) -> Option<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(capacity.max(len), align).ok()?;
        AlignedBuf::heap(layout, len, true)
    }

    /// A buffer for a load to read into: `capacity` bytes **not initialised**
    /// (zeroing a buffer the read overwrites cost a full extra pass over it:
    /// the standard allocator zeroes over-aligned allocations with a
    /// `memset`), of which the first `len` are the payload; `None` if the
    /// allocation fails. Its bytes are written only through raw pointers
    /// ([`read_target`](AlignedBuf::read_target)), and it is published, pooled
    /// or read ([`as_slice`](AlignedBuf::as_slice)) only after a read filled
    /// the whole payload (a failed load drops it).
    ///
    /// A buffer of at least [`HUGE_PAGE`] bytes (Linux) is an anonymous
    /// mapping of its own, aligned to a huge page
    /// ([`alignment_for`](AlignedBuf::alignment_for)), whose whole huge pages
    /// are advised `MADV_HUGEPAGE`: the read that first writes a fresh buffer
    /// takes one page fault per 2 MiB instead of one per 4 KiB page (measured
    /// by a C loop on the 1 GiB cold-load model in 4 MiB layers, buffered,
    /// `RWF_DONTCACHE`, one fresh buffer a layer: 0.46 s and 516 faults with
    /// the advice, 0.74–0.85 s and 262,201 faults without). Its own mapping,
    /// not the allocator's heap: dropping it returns its memory to the system
    /// at once, and no heap range the allocator reuses for small allocations
    /// keeps the huge-page advice.
    pub(crate) fn for_reading(len: usize, capacity: usize, align: usize) -> Option<AlignedBuf> {
        let size = capacity.max(len);
        let align = AlignedBuf::alignment_for(size, align);
        let layout = std::alloc::Layout::from_size_align(size, align).ok()?;
        if align >= HUGE_PAGE && cfg!(target_os = "linux") {
            return AlignedBuf::mapped(layout, len);
        }
        AlignedBuf::heap(layout, len, false)
    }

    /// A heap allocation of `layout` (zeroed or not), `len` bytes of it the
    /// payload; an empty layout allocates nothing.
    fn heap(layout: std::alloc::Layout, len: usize, zeroed: bool) -> Option<AlignedBuf> {
        let ptr = if layout.size() == 0 {
            // An aligned, dangling, never dereferenced pointer for an empty layer.
            std::ptr::NonNull::new(std::ptr::without_provenance_mut::<u8>(layout.align()))?
        } else if zeroed {
            // SAFETY: the layout's size is non-zero. The allocation is new:
            // no other pointer to it exists, so no thread can alias it.
            std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?
        } else {
            // SAFETY: as above; its bytes are uninitialised and only written
            // through `read_target` before anything reads them (see
            // `for_reading`).
            std::ptr::NonNull::new(unsafe { std::alloc::alloc(layout) })?
        };
        Some(AlignedBuf {
            ptr,
            layout,
            len,
            mapping: None,
        })
    }

    /// A buffer of `layout` in an anonymous mapping of its own, `layout.align()`
    /// bytes longer, starting at its first multiple of the alignment (the
    /// pages before and after are never touched, so never resident), its
    /// whole huge pages advised `MADV_HUGEPAGE` (where transparent huge pages
    /// are off or the advice is refused, the pages stay small: nothing else
    /// changes).
    fn mapped(layout: std::alloc::Layout, len: usize) -> Option<AlignedBuf> {
        let mut mapping = memmap2::MmapOptions::new()
            .len(layout.size().checked_add(layout.align())?)
            .map_anon()
            .ok()?;
        let base = mapping.as_mut_ptr();
        let offset = base.align_offset(layout.align());
        if offset > layout.align() {
            return None;
        }
        // The pointer keeps the mapping's write permission (it is derived
        // from `as_mut_ptr`, not from a slice), for C callers.
        let ptr = std::ptr::NonNull::new(base.wrapping_add(offset))?;
        #[cfg(target_os = "linux")]
        {
            let huge = layout.size() / HUGE_PAGE * HUGE_PAGE;
            if huge > 0
                && let Err(error) = mapping.advise_range(memmap2::Advice::HugePage, offset, huge)
            {
                tracing::trace!(%error, "MADV_HUGEPAGE refused for a read buffer");
            }
        }
        Some(AlignedBuf {
            ptr,
            layout,
            len,
            mapping: Some(mapping),
        })
    }

    /// The alignment a read buffer of `size` bytes gets when `align` is
    /// asked for: [`HUGE_PAGE`] from that size up (so that its pages can be
    /// huge pages), else `align`. The pool matches buffers on it.
    pub(crate) fn alignment_for(size: usize, align: usize) -> usize {
        if cfg!(target_os = "linux") && size >= HUGE_PAGE && align < HUGE_PAGE {
            HUGE_PAGE
        } else {
            align
        }
    }

    /// Where a read of the first `capacity` bytes (at most the allocation)
    /// writes: a raw pointer, so no reference to bytes not yet initialised
    /// is ever made.
    pub(crate) fn read_target(&mut self, capacity: usize) -> ReadTarget {
        ReadTarget {
            ptr: self.ptr.as_ptr(),
            len: capacity.min(self.layout.size()),
        }
    }

    /// The payload as a slice. See the type's doc for when this may be called.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len <= layout.size()` initialised (zeroed
        // or read) bytes for as long as `self`; no `&mut` to them exists while
        // `&self` is borrowed, and writers through `as_ptr` are excluded while
        // such a slice lives (the type's doc).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The payload's address, with the allocation's read and write permission.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The payload length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The allocation's size in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The allocation's alignment.
    pub(crate) fn align(&self) -> usize {
        self.layout.align()
    }

    /// Sets the payload length (at most the capacity) of a buffer being reused.
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len.min(self.layout.size());
    }
}

/// The bytes of an unpublished buffer a load writes, as a raw range: the
/// load's requests write disjoint parts of it from several I/O workers.
/// (A remote fetch ahead is such a load, run as a task on the object's
/// runtime: the task owns the buffer, makes the target from it, and returns
/// the buffer only once its requests are done.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadTarget {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: a `ReadTarget` is only made by a load from a buffer it owns
// exclusively (`&mut AlignedBuf`, not published), and the load's requests
// write disjoint subranges of it ([`ReadTarget::piece`]) and finish before
// the load returns; no reference to the bytes exists meanwhile. A remote
// fetch ahead owns its buffer inside its task, and its requests are futures
// of that same task: they write only while the task is polled, so a task
// aborted or dropped with the runtime drops its requests with the buffer and
// none writes afterwards; the buffer reaches its load only through the
// task's result, after every request finished.
unsafe impl Send for ReadTarget {}
// SAFETY: as above; shared copies are only used to derive disjoint pieces.
unsafe impl Sync for ReadTarget {}

impl ReadTarget {
    /// The bytes of a slice the caller holds exclusively while the target is used.
    #[cfg(feature = "remote")]
    pub(crate) fn of(bytes: &mut [u8]) -> ReadTarget {
        ReadTarget {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
        }
    }

    /// Fills the target with zeros.
    pub(crate) fn zero(self) {
        // SAFETY: the target lies inside a buffer this load owns exclusively
        // (see above), no reference to its bytes exists, and no request writes
        // this piece (it is a gap no file covers).
        unsafe { std::ptr::write_bytes(self.ptr, 0, self.len) };
    }

    /// Faults the target's pages in, writable, without changing a byte
    /// (`MADV_POPULATE_WRITE`, Linux 5.14+): pages not present yet are
    /// allocated (zeroed by the kernel), present ones are left as they are.
    /// Fails where the advice is unknown (older kernels, other systems).
    pub(crate) fn fault_in(self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the range lies inside a buffer a load owns exclusively
            // (see the type's doc), so the advice changes no other owner's
            // memory. It writes no byte: a read the load's own thread runs
            // into the same pages at the same time (the kernel copying into
            // them) keeps what it wrote, the kernel serialising the two
            // faults of a page under its page-table lock; no Rust reference
            // to these bytes exists to observe a change.
            let result =
                unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_POPULATE_WRITE) };
            if result == 0 {
                return Ok(());
            }
            Err(std::io::Error::last_os_error())
        }
        #[cfg(not(target_os = "linux"))]
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Copies `bytes` (at most the target's length) to the target's start.
    #[cfg(feature = "remote")]
    pub(crate) fn copy_from(self, bytes: &[u8]) {
        assert!(bytes.len() <= self.len, "a copy past its target");
        // SAFETY: the target lies inside a buffer this load owns exclusively
        // (see the type's doc) and `bytes.len()` fits in it (checked above);
        // this request is the only writer of this piece and no reference to
        // its bytes exists; `bytes` is a separate allocation (no overlap).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, bytes.len()) };
    }

    /// `len` bytes from `at` (within the target).
    pub(crate) fn piece(self, at: usize, len: usize) -> ReadTarget {
        debug_assert!(at + len <= self.len);
        ReadTarget {
            ptr: self.ptr.wrapping_add(at),
            len,
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // A mapped buffer is unmapped when `mapping` drops, after this.
        if self.mapping.is_none() && self.layout.size() != 0 {
            // SAFETY: allocated in `zeroed` or `for_reading` with this layout
            // (size non-zero), freed only here, once: `self` owns it exclusively.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }
}

/// Buffers of evicted layers, kept for the next load of the same capacity.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
    /// Capacity of the buffers in `free`.
    bytes: AtomicU64,
    /// Loads served from the pool, and buffers allocated fresh.
    pub(crate) reused: AtomicU64,
    pub(crate) allocated: AtomicU64,
}

impl BufferPool {
    /// A pooled buffer of exactly `capacity` bytes aligned to `align`, its
    /// payload length set to `len` (its bytes are another layer's: the caller
    /// overwrites all `len` of them or discards it).
    pub(crate) fn take(&self, len: usize, capacity: usize, align: usize) -> Option<AlignedBuf> {
        let mut free = self.free.lock().ok()?;
        let at = free
            .iter()
            .position(|buffer| buffer.capacity() == capacity && buffer.align() == align)?;
        let mut buffer = free.swap_remove(at);
        drop(free);
        self.bytes.fetch_sub(capacity as u64, Ordering::Relaxed);
        self.reused.fetch_add(1, Ordering::Relaxed);
        buffer.set_len(len);
        Some(buffer)
    }

    /// Keeps `buffer` if the pool stays within `room` bytes; frees it otherwise.
    pub(crate) fn give(&self, buffer: AlignedBuf, room: u64) {
        let capacity = buffer.capacity() as u64;
        if capacity == 0 {
            return;
        }
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        if self.bytes.load(Ordering::Relaxed) + capacity <= room {
            self.bytes.fetch_add(capacity, Ordering::Relaxed);
            free.push(buffer);
        }
    }

    /// Frees pooled buffers until the pool holds at most `room` bytes.
    pub(crate) fn trim(&self, room: u64) {
        if self.bytes.load(Ordering::Relaxed) <= room {
            return;
        }
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        while self.bytes.load(Ordering::Relaxed) > room {
            let Some(buffer) = free.pop() else { break };
            self.bytes
                .fetch_sub(buffer.capacity() as u64, Ordering::Relaxed);
        }
    }

    /// Capacity of the pooled buffers.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod buffer_tests {
    use super::{AlignedBuf, ReadTarget};

    /// A load's requests write disjoint pieces of a buffer not yet
    /// initialised, through raw pointers only; once every piece is written,
    /// the payload reads back (Miri checks that no byte is read before it is
    /// written and that the pieces stay inside the allocation).
    #[test]
    fn a_buffer_for_reading_is_filled_piece_by_piece_through_raw_pointers() {
        let mut buffer = AlignedBuf::for_reading(10, 4096, 4096).expect("4 KiB");
        let target: ReadTarget = buffer.read_target(10);
        for (at, len) in [(0, 4), (4, 4), (8, 2)] {
            let piece = target.piece(at, len);
            for i in 0..piece.len {
                // SAFETY: inside the piece, inside the allocation; no reference exists.
                unsafe { piece.ptr.add(i).write((at + i) as u8) };
            }
        }
        assert_eq!(buffer.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(buffer.as_ptr() as usize % 4096, 0);
    }

    /// A fresh read buffer of a layer of 2 MiB or more is aligned to a huge
    /// page and advised `MADV_HUGEPAGE` (the read that first writes it then
    /// faults once per 2 MiB, not once per 4 KiB page), in a mapping of its
    /// own that goes when it is dropped; a smaller one is not.
    /// Checked in the kernel's own view of the mapping (`/proc/self/smaps`:
    /// `hg` in `VmFlags`).
    #[test]
    #[cfg_attr(miri, ignore = "madvise and /proc are foreign to Miri")]
    fn large_read_buffers_are_advised_to_huge_pages() {
        if !cfg!(target_os = "linux") {
            tinyai_format::fixtures::skip("huge-page advice", "not Linux");
            return;
        }
        let huge = AlignedBuf::for_reading(5 << 20, 5 << 20, 4096).expect("5 MiB");
        assert_eq!(huge.align(), super::HUGE_PAGE);
        assert_eq!(huge.as_ptr() as usize % super::HUGE_PAGE, 0);
        assert_eq!(
            AlignedBuf::alignment_for(5 << 20, 4096),
            super::HUGE_PAGE,
            "the pool matches buffers on the alignment a fresh one gets"
        );
        let Some(flags) = vm_flags(huge.as_ptr() as usize) else {
            tinyai_format::fixtures::skip("huge-page advice", "no /proc/self/smaps");
            return;
        };
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "a 5 MiB read buffer is not advised to huge pages: VmFlags {flags}"
        );
        let small = AlignedBuf::for_reading(64 << 10, 64 << 10, 4096).expect("64 KiB");
        assert_eq!(small.align(), 4096);
        // Its own mapping: dropping it unmaps it (no heap range keeps the
        // advice), also once glibc would serve it from its heap (freeing a
        // larger allocation raised glibc's mmap threshold above it).
        drop(huge);
        drop(AlignedBuf::for_reading(24 << 20, 24 << 20, 4096).expect("24 MiB"));
        // (The tests beside this one map memory too, and one may land at the
        // freed address: only a mapping that still carries the advice counts.)
        for round in 0..2 {
            let huge = AlignedBuf::for_reading(5 << 20, 5 << 20, 4096).expect("5 MiB");
            let address = huge.as_ptr() as usize;
            drop(huge);
            let flags = vm_flags(address);
            assert!(
                flags
                    .as_deref()
                    .is_none_or(|flags| !flags.split_whitespace().any(|f| f == "hg")),
                "a dropped 5 MiB read buffer is still mapped with its advice (round {round}): \
                 VmFlags {flags:?}"
            );
        }
    }

    /// `VmFlags` of the mapping holding `address`, from `/proc/self/smaps`.
    fn vm_flags(address: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                inside = (start..end).contains(&address);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_owned());
            }
        }
        None
    }

    /// The owned backend hands C callers a writable pointer to a layer's
    /// buffer: writing through it must be allowed (Miri checks the pointer's
    /// permission; a pointer made from a `&[u8]` would not have it).
    #[test]
    fn a_c_caller_may_write_through_an_owned_buffers_pointer() {
        let buffer = AlignedBuf::zeroed(16, 32, 64).expect("16 bytes");
        let pointer = buffer.as_ptr();
        assert_eq!(pointer as usize % 64, 0);
        // SAFETY: inside the 16-byte payload; no slice of the buffer is alive.
        unsafe { pointer.add(3).write(7) };
        assert_eq!(
            buffer.as_slice(),
            &[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let empty = AlignedBuf::for_reading(0, 0, 4096).expect("nothing to allocate");
        assert!(empty.as_slice().is_empty());
        assert_eq!(empty.as_ptr() as usize % 4096, 0);
    }
}
