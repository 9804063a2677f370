//! The only module that touches the file: opening, `pread`, the mapping and its
//! page-level advice.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::{Advice, MmapMut, MmapOptions, UncheckedAdvice};

use crate::buffer::{AlignedBuf, BufferPool, HUGE_PAGE, ReadTarget};
use crate::carry::Carry;
use crate::config::Backend;
use crate::error::StoreError;
use crate::io::{Tuner, aligned_chunks, chunks, run_requests, with_pages_faulted_ahead};

/// The system page size.
pub(crate) fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions; it only reads a
        // system constant.
        let value = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(value).ok().filter(|&v| v > 0).unwrap_or(4096)
    })
}

#[derive(Debug)]
enum Access {
    /// A private (copy-on-write) mapping and its base address, whose provenance
    /// was exposed at creation so that C callers can be handed writable pointers.
    Mapped(MmapMut, usize),
    Owned {
        /// Reads bypass the page cache (each part has its `O_DIRECT` descriptor).
        direct: bool,
    },
    /// An object in object storage, read into owned buffers (no parts).
    #[cfg(feature = "remote")]
    Remote(Box<crate::remote::RemoteObject>),
}

/// A read failure a test makes happen ([`crate::MappedModel::inject_read_fault`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// The read fails with `EIO`.
    Eio,
    /// The read ends early (as if the file were shorter than its tables say).
    ShortRead,
}

/// Injected faults by the byte offset of the read they hit, with how many
/// reads they still fail.
#[derive(Debug, Default)]
struct Faults {
    armed: std::sync::atomic::AtomicBool,
    pending: std::sync::Mutex<Vec<(u64, InjectedFault, u32)>>,
}

/// One file of a source: a whole `.tmai`, safetensors or GGUF file, or one
/// shard of a sharded safetensors set, placed at `base` in the source's byte
/// space (see `tinyai_format::direct`).
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// An `O_DIRECT` descriptor of the same file (owned backend with direct I/O).
    direct: Option<File>,
    /// A descriptor of the same file with kernel read-ahead off
    /// (`POSIX_FADV_RANDOM`), for uncharged reads (opened on first use).
    random: OnceLock<File>,
    /// Whether this file's reads may ask the kernel to drop the page cache
    /// behind them (`RWF_DONTCACHE`, Linux 6.14+ on ext4, xfs, btrfs, …):
    /// probed once, on the first buffered load.
    drop_behind: OnceLock<bool>,
    /// Bytes a stream's drop-behind read brought in past a layer's end, for
    /// the next layer (see `crate::carry`).
    carry: Carry,
    pub(crate) base: u64,
    length: u64,
    inode: (u64, u64),
}

impl Part {
    /// Opens `path` as a part at `base` of a source.
    pub(crate) fn open(path: &Path, base: u64) -> Result<Part, StoreError> {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        let metadata = file.metadata().map_err(io_error(path, "stat"))?;
        if !metadata.is_file() {
            return Err(StoreError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Ok(Part {
            path: path.to_path_buf(),
            file,
            direct: None,
            random: OnceLock::new(),
            drop_behind: OnceLock::new(),
            carry: Carry::default(),
            base,
            length: metadata.len(),
            inode: (metadata.dev(), metadata.ino()),
        })
    }

    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// Reads exactly `buf.len()` bytes at `offset` of this file, or fails.
    pub(crate) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.read_exact_through(&self.file, offset, buf)
    }

    /// Reads exactly `buf.len()` bytes at `offset` through `file` (a
    /// descriptor of this part's file), or fails.
    fn read_exact_through(
        &self,
        file: &File,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        let read = read_fully(file, offset, buf).map_err(io_error(&self.path, "read"))?;
        if read < buf.len() {
            return Err(StoreError::FileChanged {
                path: self.path.clone(),
                opened: self.length,
                now: offset + read as u64,
            });
        }
        Ok(())
    }

    /// Like [`Part::read_exact_at`], through a descriptor whose kernel
    /// read-ahead is off: reads that nothing charges must not pull in
    /// megabytes after them (read-ahead state belongs to the descriptor, so
    /// loads through the main one keep theirs).
    fn read_exact_at_no_readahead(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.read_exact_through(self.random_file()?, offset, buf)
    }

    /// The descriptor of this file whose kernel read-ahead is off (opened on
    /// first use).
    fn random_file(&self) -> Result<&File, StoreError> {
        if let Some(file) = self.random.get() {
            return Ok(file);
        }
        let file = File::open(&self.path).map_err(io_error(&self.path, "open"))?;
        // SAFETY: plain syscall on a descriptor we own; no memory is involved.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        Ok(self.random.get_or_init(|| file))
    }

    /// Whether reads of this file can drop their pages from the page cache
    /// behind them (see [`read_drop_behind`]); asks the kernel once.
    fn drop_behind(&self) -> bool {
        *self.drop_behind.get_or_init(|| {
            let mut byte = 0u8;
            let target = ReadTarget {
                ptr: &raw mut byte,
                len: 1,
            };
            let supported = read_drop_behind(&self.file, 0, target).is_ok();
            tracing::debug!(path = %self.path.display(), supported, "RWF_DONTCACHE reads");
            supported
        })
    }

    fn advise(&self, offset: u64, len: u64, advice: libc::c_int) {
        // SAFETY: plain syscall on a descriptor we own; no memory is involved.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                advice,
            );
        }
    }
}

/// The piece of a source's byte range that lies in one part: `len` bytes at
/// `file_offset` of `part`, which are bytes `at..at + len` of the range.
struct Piece<'a> {
    part: &'a Part,
    file_offset: u64,
    at: u64,
    len: u64,
}

/// An open model: one file, or the files of a sharded set laid out in one
/// byte space (gaps between them read as zero).
#[derive(Debug)]
pub(crate) struct Source {
    path: PathBuf,
    parts: Vec<Part>,
    length: u64,
    access: Access,
    faults: Faults,
    /// The device's bandwidth and latency as loads measured them (sizes the
    /// requests in flight; see [`crate::io`]).
    pub(crate) tuner: Tuner,
    /// Owned backend: buffers of evicted layers, reused by later loads.
    pub(crate) buffers: BufferPool,
    /// Mapped backend: faults read whole 2 MiB blocks of the file (see
    /// [`Source::read_in_huge_blocks`]).
    huge_blocks: bool,
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        path,
        action,
        source,
    }
}

impl Source {
    #[cfg(test)]
    pub(crate) fn open(path: &Path, backend: Backend) -> Result<Source, StoreError> {
        let part = Part::open(path, 0)?;
        let length = part.length;
        Source::from_parts(path, vec![part], length, backend)
    }

    /// A source over `parts` (in base order) whose byte space is `length`
    /// bytes; `path` names it in messages. A set of several files is mapped
    /// into one reserved range, each file at its base ([`map_set`]).
    pub(crate) fn from_parts(
        path: &Path,
        mut parts: Vec<Part>,
        length: u64,
        backend: Backend,
    ) -> Result<Source, StoreError> {
        let access = match (backend, parts.as_slice()) {
            (Backend::Mapped, [_, _, ..]) => match map_set(&parts, length) {
                Ok(mut map) => {
                    let base = map.as_mut_ptr().expose_provenance();
                    Access::Mapped(map, base)
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "mapping the set failed; falling back to the owned backend");
                    Access::Owned { direct: false }
                }
            },
            (Backend::Mapped, [part]) if part.length > 0 => {
                // SAFETY: a private (MAP_PRIVATE) mapping: this crate never writes
                // through it, and writes by C callers go to private copies, never to
                // the file. Its bytes can still change if another process modifies
                // the file; that is the documented contract of `Backend::Mapped`
                // (see its docs): the store re-checks the file length before each
                // load and tables are parsed from a private copy, so nothing this
                // crate decides depends on mapped bytes staying the same.
                // MAP_NORESERVE: pages are only copied if written, so the mapping
                // reserves no swap for the whole file.
                match unsafe { MmapOptions::new().no_reserve_swap().map_copy(&part.file) } {
                    Ok(mut map) => {
                        let base = map.as_mut_ptr().expose_provenance();
                        Access::Mapped(map, base)
                    }
                    Err(error) => {
                        // E.g. an address-space limit (`ulimit -v`) smaller than the
                        // file: serve from owned buffers instead of failing.
                        tracing::warn!(path = %path.display(), %error, "mmap failed; falling back to the owned backend");
                        Access::Owned { direct: false }
                    }
                }
            }
            (Backend::Mapped, _) => Access::Owned { direct: false },
            (Backend::Owned { direct_io }, _) => {
                let mut direct = direct_io;
                for part in parts.iter_mut().filter(|_| direct_io) {
                    match File::options()
                        .read(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(&part.path)
                    {
                        Ok(file) => part.direct = Some(file),
                        Err(error) => {
                            tracing::warn!(path = %part.path.display(), %error, "O_DIRECT unavailable; using buffered reads");
                            direct = false;
                        }
                    }
                }
                if !direct {
                    for part in &mut parts {
                        part.direct = None;
                    }
                }
                Access::Owned { direct }
            }
        };
        Ok(Source {
            path: path.to_path_buf(),
            parts,
            length,
            access,
            faults: Faults::default(),
            tuner: Tuner::default(),
            buffers: BufferPool::default(),
            huge_blocks: false,
        })
    }

    /// A source over a remote object (read into owned buffers).
    #[cfg(feature = "remote")]
    pub(crate) fn remote(object: crate::remote::RemoteObject) -> Source {
        Source {
            path: object.path(),
            parts: Vec::new(),
            length: object.size(),
            access: Access::Remote(Box::new(object)),
            faults: Faults::default(),
            tuner: Tuner::default(),
            buffers: BufferPool::default(),
            huge_blocks: false,
        }
    }

    /// Whether this source is a remote object.
    #[cfg(feature = "remote")]
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.access, Access::Remote(_))
    }

    /// Remote: whether a load of `offset..offset + len` would fetch it (not in
    /// the disk tier, no fetch of it under way).
    #[cfg(feature = "remote")]
    pub(crate) fn would_fetch(&self, offset: u64, len: u64) -> bool {
        match (&self.access, usize::try_from(len)) {
            (Access::Remote(object), Ok(len)) => len > 0 && object.would_fetch(offset, len),
            _ => false,
        }
    }

    /// Remote: starts fetching a charged layer's bytes ahead of its load,
    /// into a pooled buffer of its size, or else a fresh one (the pool first
    /// trimmed to `room`, as a load does); false if it could not start.
    #[cfg(feature = "remote")]
    pub(crate) fn fetch_ahead(&self, offset: u64, len: u64, room: u64) -> bool {
        let (Access::Remote(object), Ok(len_usize)) = (&self.access, usize::try_from(len)) else {
            return false;
        };
        let page = page_size();
        let rounded = len.next_multiple_of(page) as usize;
        let align = AlignedBuf::alignment_for(rounded, page as usize);
        let buffer = match self.buffers.take(len_usize, rounded, align) {
            Some(buffer) => buffer,
            None => {
                self.buffers.trim(room);
                let Some(buffer) = AlignedBuf::for_reading(len_usize, rounded, align) else {
                    return false;
                };
                self.buffers.allocated.fetch_add(1, Ordering::Relaxed);
                buffer
            }
        };
        match object.fetch_ahead(offset, len_usize, buffer) {
            Ok(()) => true,
            Err(buffer) => {
                self.buffers.give(buffer, room);
                false
            }
        }
    }

    /// Remote: removes a layer's bytes from the disk tier (they failed their
    /// checksum; the tier keeps what it fetched before the check).
    #[cfg(feature = "remote")]
    pub(crate) fn forget_kept(&self, offset: u64, len: u64) {
        if let (Access::Remote(object), Ok(len)) = (&self.access, usize::try_from(len)) {
            object.forget(offset, len);
        }
    }

    /// Remote: ends the fetch started ahead at `offset`, freeing its buffer.
    #[cfg(feature = "remote")]
    pub(crate) fn discard_ahead(&self, offset: u64) {
        if let Access::Remote(object) = &self.access {
            object.discard_ahead(offset);
        }
    }

    /// Ends a remote source's requests in flight (their reads fail); nothing
    /// for a local file, whose reads are short.
    pub(crate) fn cancel_requests(&self) {
        #[cfg(feature = "remote")]
        if let Access::Remote(object) = &self.access {
            object.cancel();
        }
    }

    /// The pieces of `offset..offset + len` that lie in a part (bytes in the
    /// gaps between parts have none), in order.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = Piece<'_>> {
        let end = offset.saturating_add(len);
        self.parts.iter().filter_map(move |part| {
            let start = offset.max(part.base);
            let stop = end.min(part.base + part.length);
            (start < stop).then(|| Piece {
                part,
                file_offset: start - part.base,
                at: start - offset,
                len: stop - start,
            })
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// The backend in effect (a mapped open may have fallen back to owned buffers).
    pub(crate) fn backend(&self) -> Backend {
        match &self.access {
            Access::Mapped(..) => Backend::Mapped,
            Access::Owned { direct } => Backend::Owned { direct_io: *direct },
            #[cfg(feature = "remote")]
            Access::Remote(_) => Backend::Owned { direct_io: false },
        }
    }

    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.access, Access::Mapped(..))
    }

    /// Mapped backend: how far the kernel's read-ahead may run past a
    /// populated range (the largest over the parts' devices; see
    /// `crate::readahead`); `None` for owned buffers or when unknown.
    pub(crate) fn read_ahead_reach(&self) -> Option<u64> {
        if !self.is_mapped() {
            return None;
        }
        self.parts.iter().try_fold(0, |reach: u64, part| {
            Some(reach.max(crate::readahead::reach(&part.file)?))
        })
    }

    /// Reads exactly `buf.len()` bytes at `offset` of the byte space
    /// (buffered; gaps between parts read as zero), or fails.
    pub(crate) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.read_pieces(offset, buf, Part::read_exact_at)
    }

    /// [`Source::read_exact_at`] without kernel read-ahead (for uncharged reads).
    pub(crate) fn read_exact_at_no_readahead(
        &self,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        self.read_pieces(offset, buf, Part::read_exact_at_no_readahead)
    }

    fn read_pieces(
        &self,
        offset: u64,
        buf: &mut [u8],
        read: impl Fn(&Part, u64, &mut [u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if offset.saturating_add(buf.len() as u64) > self.length {
            return Err(StoreError::FileChanged {
                path: self.path.clone(),
                opened: self.length,
                now: self.length,
            });
        }
        #[cfg(feature = "remote")]
        if let Access::Remote(object) = &self.access {
            // `buf` is borrowed mutably for the whole read.
            return object.read(offset, ReadTarget::of(buf));
        }
        buf.fill(0);
        for piece in self.pieces(offset, buf.len() as u64) {
            let at = piece.at as usize;
            read(
                piece.part,
                piece.file_offset,
                &mut buf[at..at + piece.len as usize],
            )?;
        }
        Ok(())
    }

    /// Refuses to go on if a file's length (or identity) changed since open.
    pub(crate) fn check_unchanged(&self) -> Result<(), StoreError> {
        for part in &self.parts {
            let metadata = part.file.metadata().map_err(io_error(&part.path, "stat"))?;
            if metadata.len() != part.length || (metadata.dev(), metadata.ino()) != part.inode {
                return Err(StoreError::FileChanged {
                    path: part.path.clone(),
                    opened: part.length,
                    now: metadata.len(),
                });
            }
        }
        Ok(())
    }

    /// Mapped backend: a writable pointer to byte `offset` of the private mapping,
    /// if `offset..offset+len` lies inside it. Writes through it land in private
    /// copy-on-write pages (never in the file) and are discarded when the pages
    /// are dropped.
    pub(crate) fn mapped_mut_ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        match &self.access {
            Access::Mapped(map, base) => {
                let end = offset.checked_add(len)?;
                (end <= map.len() as u64)
                    .then(|| std::ptr::with_exposed_provenance_mut(base + offset as usize))
            }
            _ => None,
        }
    }

    /// Mapped backend: the mapping's base address (provenance exposed at
    /// creation), for turning validated layer offsets into pointers without a
    /// lookup; `None` with the owned backend.
    #[inline]
    pub(crate) fn mapped_base(&self) -> Option<usize> {
        match &self.access {
            Access::Mapped(_, base) => Some(*base),
            _ => None,
        }
    }

    /// Mapped backend: the bytes `offset..offset+len` of the mapping.
    pub(crate) fn mapped(&self, offset: u64, len: u64) -> Option<&[u8]> {
        match &self.access {
            Access::Mapped(map, _) => map.get(offset as usize..(offset + len) as usize),
            _ => None,
        }
    }

    /// Mapped backend: queues asynchronous reads of a range (`MADV_WILLNEED`)
    /// without waiting, so several prefetched layers are in flight at once.
    /// Owned backend (buffered): `POSIX_FADV_WILLNEED` on the file range, unless
    /// its reads drop behind them (their kernel read-ahead does it).
    pub(crate) fn start_read(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        match &self.access {
            // Huge blocks: MADV_WILLNEED would read small folios, which the
            // blocks' faults would then map page by page.
            Access::Mapped(..) if self.huge_blocks => {}
            Access::Mapped(map, _) => {
                let _ = map.advise_range(Advice::WillNeed, offset as usize, len as usize);
            }
            Access::Owned { direct: false } => {
                for piece in self.pieces(offset, len) {
                    // Drop-behind reads have the kernel's read-ahead; pages
                    // advised in now would be ordinary ones, left in the
                    // page cache after the read.
                    if !piece.part.drop_behind() {
                        piece
                            .part
                            .advise(piece.file_offset, piece.len, libc::POSIX_FADV_WILLNEED);
                    }
                }
            }
            // O_DIRECT reads bypass the page cache: nothing to queue.
            Access::Owned { direct: true } => {}
            // Remote layers are fetched when loaded.
            #[cfg(feature = "remote")]
            Access::Remote(_) => {}
        }
    }

    /// Test seam: the next `times` reads starting at `offset` fail with `fault`.
    pub(crate) fn inject_fault(&self, offset: u64, fault: InjectedFault, times: u32) {
        let mut pending = self
            .faults
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.retain(|&(at, ..)| at != offset);
        if times > 0 {
            pending.push((offset, fault, times));
        }
        self.faults
            .armed
            .store(!pending.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// The injected failure due for a read request of `len` bytes at
    /// `offset` (one whose range holds an armed fault's offset), if any.
    fn injected(&self, offset: u64, len: u64) -> Option<InjectedFault> {
        if !self.faults.armed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut pending = self
            .faults
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = pending
            .iter()
            .position(|&(start, ..)| start >= offset && start < offset + len.max(1))?;
        let fault = pending[at].1;
        pending[at].2 -= 1;
        if pending[at].2 == 0 {
            pending.remove(at);
        }
        Some(fault)
    }

    /// One read request's injected failure as the request's own would be:
    /// `EIO`, or the file ending halfway through the request (`start`: the
    /// request's offset in the layer).
    fn injected_failure(&self, offset: u64, len: u64, start: u64) -> Result<(), Failure> {
        match self.injected(offset, len) {
            None => Ok(()),
            Some(InjectedFault::Eio) => {
                Err(Failure::Io(std::io::Error::from_raw_os_error(libc::EIO)))
            }
            Some(InjectedFault::ShortRead) => Err(Failure::Short((start + len / 2) as usize)),
        }
    }

    /// Mapped backend: makes the pages of layer `layer`'s range resident, or
    /// says why it cannot (an I/O error reading the file: touching those pages
    /// would raise SIGBUS, so the layer is not served).
    /// `sequential`: one `MADV_POPULATE_READ` over the whole layer, so that the
    /// kernel's read-ahead runs ahead of the faults (past the layer's end too:
    /// see `crate::readahead`); otherwise exactly the layer's pages are read.
    pub(crate) fn populate(
        &self,
        layer: u64,
        offset: u64,
        len: u64,
        sequential: bool,
    ) -> Result<(), StoreError> {
        let Access::Mapped(map, _) = &self.access else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        let populated = if sequential {
            self.injected_failure(offset, len, 0).and_then(|()| {
                map.advise_range(Advice::PopulateRead, offset as usize, len as usize)
                    .map_err(Failure::Io)
            })
        } else {
            self.populate_exactly(map, offset, len)
        };
        match populated {
            Ok(()) => return Ok(()),
            // EINVAL: a kernel before 5.14 (no MADV_POPULATE_READ); touch below.
            Err(Failure::Io(error)) if error.raw_os_error() == Some(libc::EINVAL) => {}
            // EFAULT / EIO: a page could not be read from the file.
            Err(Failure::Io(source)) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    action: "read (populate)",
                    source,
                });
            }
            Err(Failure::Short(read)) => return Err(self.short_read(layer, offset, len, read)),
        }
        // Touch one byte per page, through the raw mapping (C callers may be
        // writing other bytes of these pages: no slice of them is made).
        if let Some(base) = self.mapped_mut_ptr(offset, len) {
            let mut sum = 0u8;
            for at in (0..len).step_by(page_size() as usize) {
                // SAFETY: `at < len` and the range lies inside the mapping
                // (`mapped_mut_ptr` checked it); a volatile byte read of a
                // mapped page is a plain load, racing only with other loads or
                // with C callers' byte writes to their private copies.
                sum = sum.wrapping_add(unsafe { base.add(at as usize).read_volatile() });
            }
            std::hint::black_box(sum);
        }
        Ok(())
    }

    /// Mapped backend, for a model that fits its budget whole: from now on a
    /// load reads the 2 MiB blocks of the file its layer lies in, into large
    /// folios, instead of exactly its pages (see
    /// [`crate::readahead::read_in_huge_blocks`]). Returns whether it took.
    pub(crate) fn read_in_huge_blocks(&mut self) -> bool {
        if let Access::Mapped(map, _) = &self.access {
            self.huge_blocks = crate::readahead::read_in_huge_blocks(map);
        }
        self.huge_blocks
    }

    /// Reads exactly the pages of `offset..offset + len` into the mapping (or
    /// the huge blocks they lie in, see [`Source::read_in_huge_blocks`]).
    fn populate_exactly(&self, map: &MmapMut, offset: u64, len: u64) -> Result<(), Failure> {
        if self.huge_blocks {
            // No MADV_WILLNEED: it would read small folios. Each request
            // covers whole blocks, so no two requests wait on one block.
            let block = HUGE_PAGE as u64;
            let size = self.tuner.request_size(len).next_multiple_of(block);
            return run_requests(
                &self.tuner,
                aligned_chunks(offset, len, size),
                len,
                |(at, n)| {
                    self.injected_failure(at, n, at - offset)?;
                    map.advise_range(Advice::PopulateRead, at as usize, n as usize)
                        .map_err(Failure::Io)
                },
            );
        }
        // Start large asynchronous reads of exactly this range, then wait for the
        // pages, one request per chunk, several in flight (see `crate::io`).
        // (MADV_POPULATE_READ alone is faster, but its faults trigger
        // read-ahead past the layer's end, which only a stream's window pays
        // for — see `crate::readahead`; WILLNEED first means the faults find
        // their pages present.)
        let _ = map.advise_range(Advice::WillNeed, offset as usize, len as usize);
        let size = self.tuner.request_size(len);
        run_requests(&self.tuner, chunks(offset, len, size), len, |(at, n)| {
            self.injected_failure(at, n, at - offset)?;
            map.advise_range(Advice::PopulateRead, at as usize, n as usize)
                .map_err(Failure::Io)
        })
    }

    /// Mapped backend: drops the pages that lie entirely inside a range (pages
    /// shared with a neighbouring layer are kept), and the page cache's pages
    /// inside `cached` (if any) too.
    pub(crate) fn drop_pages(&self, offset: u64, len: u64, cached: Option<(u64, u64)>) {
        let Access::Mapped(map, _) = &self.access else {
            return;
        };
        let page = page_size();
        let start = offset.next_multiple_of(page);
        let end = (offset + len) / page * page;
        if end <= start {
            return;
        }
        // SAFETY: MADV_DONTNEED on a private file-backed mapping drops this
        // process's page-table entries; the next access re-reads the bytes from
        // the file, so slices and pointers handed out earlier remain valid (they
        // refault). This crate never writes through the mapping; pages a C caller
        // wrote (private copies) revert to the file's bytes, as documented for
        // `Backend::Mapped`. Only pages of layers no guard pins are dropped.
        let dropped = unsafe {
            map.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
        if let Err(error) = dropped {
            // The pages stay resident (memory above the budget until the kernel
            // reclaims them); nothing is unsafe. Say so rather than hide it.
            tracing::warn!(offset, len, %error, "MADV_DONTNEED failed; evicted pages stay resident");
        }
        if let Some((start, len)) = cached {
            self.drop_cached(start, len);
        }
    }

    /// Drops the pages that lie entirely inside a range from the page cache
    /// (`POSIX_FADV_DONTNEED`; pages mapped or dirty stay).
    pub(crate) fn drop_cached(&self, offset: u64, len: u64) {
        let page = page_size();
        let start = offset.next_multiple_of(page);
        let end = (offset + len) / page * page;
        if end > start {
            for piece in self.pieces(start, end - start) {
                piece
                    .part
                    .advise(piece.file_offset, piece.len, libc::POSIX_FADV_DONTNEED);
            }
        }
    }

    /// Mapped backend: `mlock`s (or unlocks) a range; returns false if the kernel refused.
    /// Only `mlock2(MLOCK_ONFAULT)` is used: a plain `mlock` of this private
    /// writable mapping would fault every page in for writing, copying it.
    pub(crate) fn lock(&self, offset: u64, len: u64, lock: bool) -> bool {
        self.mapped(offset, len)
            .is_none_or(|bytes| lock_slice(bytes, lock, false))
    }

    /// Mapped backend: bytes of the mapping whose pages are resident (`mincore`).
    pub(crate) fn resident_bytes(&self) -> u64 {
        let Access::Mapped(map, _) = &self.access else {
            return 0;
        };
        let page = page_size() as usize;
        let pages = map.len().div_ceil(page);
        let mut vector = vec![0u8; pages];
        // SAFETY: the mapping starts page-aligned (mmap guarantees it) and is
        // `map.len()` bytes long; `vector` has one byte per page of that range.
        let result = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                map.len(),
                vector.as_mut_ptr(),
            )
        };
        if result != 0 {
            return 0;
        }
        vector.iter().filter(|&&v| v & 1 != 0).count() as u64 * page as u64
    }

    /// Owned backend: reads a layer into an aligned buffer (a pooled one of
    /// the same size when there is one, else a fresh one; `room`: the bytes
    /// the pool may keep besides the charged layers, when a fresh one is
    /// allocated), in requests of [`crate::io::CHUNK`] bytes with several in
    /// flight.
    pub(crate) fn read_owned(
        &self,
        layer: u64,
        offset: u64,
        len: u64,
        room: impl FnOnce() -> u64,
        got_buffer: impl FnOnce(),
    ) -> Result<AlignedBuf, StoreError> {
        let page = page_size();
        let len_usize = usize::try_from(len).map_err(|_| {
            StoreError::InvalidConfig(format!(
                "layer {layer} of {len} bytes does not fit in this address space"
            ))
        })?;
        // O_DIRECT needs the whole transfer page-aligned: the buffer's capacity
        // is rounded up to a page (buffered reads use the same, so one pool serves both).
        let rounded = len.next_multiple_of(page) as usize;
        let align = AlignedBuf::alignment_for(rounded, page as usize);
        // A remote layer fetched ahead: its buffer, once the fetch is done
        // (fetched again into it if the fetch failed).
        #[cfg(feature = "remote")]
        if let Access::Remote(object) = &self.access
            && let Some(taken) = object.take_ahead(offset)
        {
            got_buffer();
            let (mut buffer, fetched) = taken?;
            match fetched {
                Ok(()) => object.keep(offset, &buffer, len_usize),
                // Only a failure that may pass is worth a second try (the
                // client retried transient ones already; a changed or missing
                // object stays so).
                Err(error @ StoreError::Remote { .. }) => {
                    tracing::debug!(layer, %error, "remote fetch ahead failed; fetching again");
                    object.read_layer(offset, &mut buffer, len_usize)?;
                }
                Err(error) => return Err(error),
            }
            return Ok(buffer);
        }
        let mut fresh = false;
        let mut buffer = match self.buffers.take(len_usize, rounded, align) {
            Some(buffer) => {
                got_buffer();
                buffer
            }
            None => {
                // No pooled buffer of this size: this load stops waiting for
                // one, and the pool gives up what no longer fits beside the
                // charges before a fresh one is allocated.
                got_buffer();
                self.buffers.trim(room());
                self.buffers.allocated.fetch_add(1, Ordering::Relaxed);
                fresh = true;
                AlignedBuf::for_reading(len_usize, rounded, align)
                    .ok_or_else(|| self.out_of_memory(len))?
            }
        };
        #[cfg(feature = "remote")]
        if let Access::Remote(object) = &self.access {
            object.read_layer(offset, &mut buffer, len_usize)?;
            return Ok(buffer);
        }
        if let [part] = self.parts.as_slice()
            && let Some(direct) = &part.direct
            && offset.is_multiple_of(page)
            && len > 0
        {
            let target = buffer.read_target(rounded);
            match self.read_requests(direct, offset, offset, target, len_usize, read_fully_raw) {
                Ok(()) => return Ok(buffer),
                Err(Failure::Short(read)) => return Err(self.short_read(layer, offset, len, read)),
                Err(Failure::Io(error)) => {
                    tracing::debug!(%error, layer, "O_DIRECT read failed; retrying buffered");
                }
            }
        }
        let target = buffer.read_target(len_usize);
        let mut filled = 0u64;
        for piece in self.pieces(offset, len) {
            // Gap bytes (between two files of a set) read as zero.
            target
                .piece(filled as usize, (piece.at - filled) as usize)
                .zero();
            let into = target.piece(piece.at as usize, piece.len as usize);
            let read = if piece.part.drop_behind() {
                let part = piece.part;
                // A stream reads in file order with the kernel's read-ahead;
                // any other load reads exactly its layer (read-ahead past it
                // would be read for nothing: a C loop of layers read
                // backwards took half the file again).
                let read = if part.carry.continues(piece.file_offset)
                    || part.carry.holds(piece.file_offset)
                {
                    self.read_sequential(
                        part,
                        piece.file_offset,
                        offset + piece.at,
                        into,
                        piece.len as usize,
                        fresh && buffer.align() >= HUGE_PAGE,
                    )
                } else {
                    self.read_requests(
                        part.random_file().unwrap_or(&part.file),
                        piece.file_offset,
                        offset + piece.at,
                        into,
                        piece.len as usize,
                        read_drop_behind,
                    )
                };
                if read.is_ok() {
                    part.carry.note_end(piece.file_offset + piece.len);
                }
                read
            } else {
                piece
                    .part
                    .advise(piece.file_offset, piece.len, libc::POSIX_FADV_WILLNEED);
                self.read_requests(
                    &piece.part.file,
                    piece.file_offset,
                    offset + piece.at,
                    into,
                    piece.len as usize,
                    read_fully_raw,
                )
            };
            match read {
                Ok(()) => {}
                Err(Failure::Short(read)) => {
                    return Err(self.short_read(layer, offset, len, piece.at as usize + read));
                }
                Err(Failure::Io(source)) => {
                    return Err(StoreError::Io {
                        path: piece.part.path.clone(),
                        action: "read",
                        source,
                    });
                }
            }
            filled = piece.at + piece.len;
        }
        target
            .piece(filled as usize, (len - filled) as usize)
            .zero();
        Ok(buffer)
    }

    /// Fills `target` from `file` at `offset` with buffered reads in file
    /// order from this thread, [`SEQUENTIAL_CHUNK`] bytes at a time, each
    /// asking the kernel to drop the pages behind it (`RWF_DONTCACHE`): the
    /// kernel's own read-ahead keeps the device busy (it pipelines across
    /// reads and across the loads of consecutive layers), and the copy in
    /// the page cache is gone once the bytes are in the layer's buffer.
    /// All but the bytes past `needed` must arrive. `fault_ahead`: the target
    /// is a fresh buffer of huge pages, faulted in by an I/O worker while
    /// this thread reads (see [`with_pages_faulted_ahead`]). The load
    /// continues a stream: it starts from the bytes its predecessor carried
    /// past its end and carries its own last read on to the next multiple
    /// of [`SEQUENTIAL_CHUNK`] (see `crate::carry`).
    fn read_sequential(
        &self,
        part: &Part,
        offset: u64,
        virtual_offset: u64,
        target: ReadTarget,
        needed: usize,
        fault_ahead: bool,
    ) -> Result<(), Failure> {
        let file = &part.file;
        with_pages_faulted_ahead(target, fault_ahead, |reader_at| {
            let total = target.len;
            let started = Instant::now();
            let mut fastest = Duration::MAX;
            let carried = part.carry.take_into(offset, target);
            if carried > 0 {
                // Served as its own read would have been, faults included.
                self.injected_failure(virtual_offset, carried as u64, 0)?;
            }
            let mut at = carried;
            while at < total {
                reader_at.store(at, Ordering::Relaxed);
                // Requests end on multiples of the chunk in the file, not in the
                // layer (see `SEQUENTIAL_CHUNK`).
                let file_at = offset + at as u64;
                let to_boundary =
                    (SEQUENTIAL_CHUNK as u64 - file_at % SEQUENTIAL_CHUNK as u64) as usize;
                let n = to_boundary.min(total - at);
                self.injected_failure(virtual_offset + at as u64, n as u64, at as u64)?;
                let piece = target.piece(at, n);
                let began = Instant::now();
                let read = if at + n == total {
                    read_and_carry(part, offset + at as u64, piece)
                } else {
                    read_drop_behind(file, offset + at as u64, piece)
                }
                .map_err(Failure::Io)?;
                fastest = fastest.min(began.elapsed());
                if read < n {
                    if at + read < needed {
                        return Err(Failure::Short(at + read));
                    }
                    break;
                }
                at += n;
            }
            self.tuner
                .record_reads(total as u64, started.elapsed(), fastest);
            Ok(())
        })
    }

    /// Fills `buf` from `file` at `offset` in [`crate::io::CHUNK`] requests,
    /// several in flight; all but the bytes past `needed` must arrive (the last
    /// request of an `O_DIRECT` read may run into the end of the file).
    /// `read` fills one request's target (`pread`, or a drop-behind read).
    fn read_requests(
        &self,
        file: &File,
        offset: u64,
        virtual_offset: u64,
        target: ReadTarget,
        needed: usize,
        read: fn(&File, u64, ReadTarget) -> std::io::Result<usize>,
    ) -> Result<(), Failure> {
        let total = target.len;
        let size = self.tuner.request_size(total as u64).max(1);
        // Requests end on multiples of their size in the file, not in the
        // layer: one that ends inside a page-cache folio leaves that folio
        // to be read again by its neighbour (a drop-behind read drops it;
        // layers read backwards in requests counted from their start read
        // 1.6% of the file twice).
        let mut requests = Vec::with_capacity(total.div_ceil(size as usize) + 1);
        let mut at = 0;
        while at < total {
            let to_boundary = (size - (offset + at as u64) % size) as usize;
            let n = to_boundary.min(total - at);
            requests.push((at, target.piece(at, n)));
            at += n;
        }
        run_requests(&self.tuner, requests, total as u64, |(at, piece)| {
            self.injected_failure(virtual_offset + at as u64, piece.len as u64, at as u64)?;
            let read = read(file, offset + at as u64, piece).map_err(Failure::Io)?;
            let end = at + read;
            if read < piece.len && end < needed {
                return Err(Failure::Short(end));
            }
            Ok(())
        })
    }

    fn out_of_memory(&self, len: u64) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            action: "allocate a buffer for",
            source: std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes"),
            ),
        }
    }

    fn short_read(&self, layer: u64, offset: u64, expected: u64, read: usize) -> StoreError {
        StoreError::ShortRead {
            path: self.path.clone(),
            layer,
            offset,
            expected,
            read: read as u64,
        }
    }
}

/// Maps a set of files into one range: a private anonymous reservation of
/// `length` bytes (zero pages, reading as zero between the files), over which
/// each file is mapped privately at its base with `MAP_FIXED`. Unmapping the
/// reservation (dropping the returned map) unmaps the files too.
fn map_set(parts: &[Part], length: u64) -> std::io::Result<MmapMut> {
    let length =
        usize::try_from(length).map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    let mut map = MmapOptions::new()
        .len(length)
        .no_reserve_swap()
        .map_anon()?;
    for part in parts.iter().filter(|part| part.length > 0) {
        let end = part.base.checked_add(part.length);
        if end.is_none_or(|end| end > length as u64) {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `part.base..part.base + part.length` lies inside the
        // reservation (checked above) that this function owns exclusively:
        // nothing else references its pages yet. MAP_FIXED replaces that part
        // of the reservation with a private (copy-on-write) mapping of the
        // file, on the same terms as a single file's mapping (see
        // `from_parts`); the kernel rounds the length up to a page, which
        // stays below the next base (bases are 64 KiB-aligned). The file
        // mapping is unmapped with the reservation when `map` drops.
        let mapped = unsafe {
            libc::mmap(
                map.as_mut_ptr().add(part.base as usize).cast(),
                part.length as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                part.file.as_raw_fd(),
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(map)
}

/// Why a multi-request read failed.
#[derive(Debug)]
enum Failure {
    Io(std::io::Error),
    /// The file ended at this many bytes into the read.
    Short(usize),
}

/// `pread` into a raw target until it is full or the file ends; returns the
/// bytes read.
pub(crate) fn read_fully_raw(
    file: &File,
    offset: u64,
    target: ReadTarget,
) -> std::io::Result<usize> {
    fill_raw(offset, target, |ptr, len, at| {
        // SAFETY: `fill_raw` passes `ptr .. ptr + len`, the part of the target
        // not filled yet: inside an allocation this load owns exclusively (see
        // `ReadTarget`); the kernel writes at most `len` bytes there. No Rust
        // reference to those bytes exists.
        unsafe { libc::pread(file.as_raw_fd(), ptr.cast(), len, at) }
    })
}

/// Calls `read(ptr, len, at)` (a `pread`-like system call filling `len`
/// bytes at `ptr` from file offset `at`) on what is left of `target` until it
/// is full or the file ends; returns the bytes read.
fn fill_raw(
    offset: u64,
    target: ReadTarget,
    mut read: impl FnMut(*mut u8, usize, libc::off_t) -> isize,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < target.len {
        let Ok(at) = libc::off_t::try_from(offset + done as u64) else {
            return Err(std::io::Error::from_raw_os_error(libc::EOVERFLOW));
        };
        match read(target.ptr.wrapping_add(done), target.len - done, at) {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(done)
}

/// Bytes per read of [`Source::read_sequential`]: the largest request this
/// project's disk takes whole (`max_sectors_kb`), and small enough that an
/// injected fault or a short read is reported near where it happened.
/// Reads end on multiples of it in the file (a layer's first read runs to the
/// next one): a drop-behind read that ends inside a large folio of the
/// kernel's read-ahead costs time. Measured by a C loop of 4 MiB
/// `RWF_DONTCACHE` reads over the 1 GiB cold-load model: 0.52 s from offset 0,
/// 1.0–1.1 s from one page further, 1.34 s from 1 MiB further (3 rounds
/// each, interleaved); through the store (`Owned` buffered, cold, 6
/// interleaved rounds) 0.81–2.29 s, median ~1.4 s, against 1.18–2.33 s,
/// median ~1.9 s, with requests counted from the layer's start.
const SEQUENTIAL_CHUNK: usize = 4 << 20;

/// `RWF_DONTCACHE` (Linux 6.14): a buffered read whose pages leave the page
/// cache once copied (not yet in the `libc` crate).
const RWF_DONTCACHE: libc::c_int = 0x80;

/// `preadv2(…, RWF_DONTCACHE)` into a raw target until it is full or the file
/// ends; returns the bytes read. Fails with `EOPNOTSUPP` (or `EINVAL` on a
/// kernel before 6.14) where the file system cannot drop behind.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn read_drop_behind(file: &File, offset: u64, target: ReadTarget) -> std::io::Result<usize> {
    fill_raw(offset, target, |ptr, len, at| {
        let iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        // SAFETY: `iov` describes `ptr .. ptr + len`, the part of the target
        // not filled yet, inside an allocation this load owns exclusively (see
        // `ReadTarget`; the probe passes a local byte); the kernel writes at
        // most that many bytes there and no Rust reference to them exists.
        unsafe { libc::preadv2(file.as_raw_fd(), &raw const iov, 1, at, RWF_DONTCACHE) }
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn read_drop_behind(_file: &File, _offset: u64, _target: ReadTarget) -> std::io::Result<usize> {
    Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// A stream's last drop-behind read of a layer: fills `target` from file
/// offset `offset` and, in the same request, reads on to the file's next
/// multiple of [`SEQUENTIAL_CHUNK`] into the part's carry (see
/// `crate::carry`); returns the bytes of `target` read. Without a carry
/// buffer (another read has it, or it cannot be allocated) it is a plain
/// drop-behind read.
fn read_and_carry(part: &Part, offset: u64, target: ReadTarget) -> std::io::Result<usize> {
    let end = offset + target.len as u64;
    let boundary = end
        .next_multiple_of(SEQUENTIAL_CHUNK as u64)
        .min(part.length);
    let Some(mut buffer) = (boundary > end)
        .then(|| part.carry.lend(SEQUENTIAL_CHUNK))
        .flatten()
    else {
        return read_drop_behind(&part.file, offset, target);
    };
    let spill = buffer.read_target((boundary - end) as usize);
    match read_drop_behind_two(&part.file, offset, target, spill) {
        Ok(read) if read >= target.len => {
            part.carry.give(buffer, end, read - target.len);
            Ok(target.len)
        }
        Ok(read) => {
            part.carry.give(buffer, end, 0);
            let rest = target.piece(read, target.len - read);
            Ok(read + read_drop_behind(&part.file, offset + read as u64, rest)?)
        }
        Err(error) => {
            part.carry.give(buffer, end, 0);
            Err(error)
        }
    }
}

/// One `preadv2(…, RWF_DONTCACHE)` filling `first` then `second` from file
/// offset `offset` (retried if interrupted); returns the bytes read, which
/// may be fewer than both hold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn read_drop_behind_two(
    file: &File,
    offset: u64,
    first: ReadTarget,
    second: ReadTarget,
) -> std::io::Result<usize> {
    let at = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    let iov = [
        libc::iovec {
            iov_base: first.ptr.cast(),
            iov_len: first.len,
        },
        libc::iovec {
            iov_base: second.ptr.cast(),
            iov_len: second.len,
        },
    ];
    loop {
        // SAFETY: each `iovec` describes a whole target: `first` inside a
        // buffer this load owns exclusively (see `ReadTarget`), `second`
        // inside the carry's buffer, lent to this read alone (see
        // `Carry::lend`); two allocations, so they do not overlap. The kernel
        // writes at most their lengths; no Rust reference to those bytes
        // exists.
        let read = unsafe { libc::preadv2(file.as_raw_fd(), iov.as_ptr(), 2, at, RWF_DONTCACHE) };
        if read >= 0 {
            return Ok(read as usize);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn read_drop_behind_two(
    _file: &File,
    _offset: u64,
    _first: ReadTarget,
    _second: ReadTarget,
) -> std::io::Result<usize> {
    Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// `pread` until the buffer is full or end of file; returns the bytes read.
fn read_fully(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// `mlock`s (or `munlock`s) a slice; returns false if the kernel refused.
/// `plain_fallback`: where `mlock2` is missing, fall back to `mlock` (right for
/// private heap buffers; wrong for a private file mapping, whose pages it would
/// copy by faulting them in for writing).
pub(crate) fn lock_slice(bytes: &[u8], lock: bool, plain_fallback: bool) -> bool {
    if bytes.is_empty() {
        return true;
    }
    // SAFETY: the pointer and length describe a live slice; mlock2/mlock/munlock
    // only change whether its pages may be swapped out, never their contents.
    // MLOCK_ONFAULT locks the pages already present without faulting the rest
    // in for writing, so locking the private (copy-on-write) mapping does not
    // copy its pages.
    let result = unsafe {
        if lock {
            let locked = libc::mlock2(bytes.as_ptr().cast(), bytes.len(), libc::MLOCK_ONFAULT);
            if locked == 0 || !plain_fallback {
                locked
            } else {
                libc::mlock(bytes.as_ptr().cast(), bytes.len())
            }
        } else {
            libc::munlock(bytes.as_ptr().cast(), bytes.len())
        }
    };
    result == 0
}

/// Asks the kernel to drop a file's clean pages from the page cache
/// (`fsync` then `posix_fadvise(POSIX_FADV_DONTNEED)`), so the next read of it is
/// cold. Used by benchmarks and tests; harmless for correctness.
pub fn evict_file_from_page_cache(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    // Dirty pages cannot be dropped; make them clean first.
    let _ = file.sync_all();
    // Twice, a little apart: read-ahead queued before the call may still land.
    for round in 0..2 {
        if round > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: plain syscall on a descriptor we own; no memory is involved.
        let result =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if result != 0 {
            return Err(std::io::Error::from_raw_os_error(result));
        }
    }
    Ok(())
}
