//! `libtinyai`: a drop-in C implementation of TinyAI's memory-mapped model
//! loader (`tinyai/utils/mmap_loader.h`) over [`tinyai_store`].
//!
//! C programs include `include/tinyai/utils/mmap_loader.h` (generated from this
//! crate by cbindgen, checked in, and compared by a test) and link
//! `libtinyai.a` or `libtinyai.so`. See the crate's README, "Using from C".
//!
//! # Modules
//! - `api`: the `extern "C"` functions — TinyAI's API, then the extensions.
//! - `types`: the `#[repr(C)]` structs and constants of the header.
//! - `handle` (private): what a `TinyAIMappedModel *` holds — the store, the
//!   guards that keep returned pointers valid, the descriptor snapshots.
//! - `error` (private): [`FfiError`], the thread-local last error, and the
//!   wrapper that keeps panics from crossing the boundary.
//!
//! # Invariants
//! - No logic of its own beyond the C contract: caching, loading and
//!   validation are the store's and the format crate's.
//! - Every entry point checks its pointers and runs inside `catch_unwind`;
//!   failures return NULL / -1 / false / 0 and set `tinyaiGetLastError()`.
//! - A pointer handed to C stays valid for as long as the header says, because
//!   the model holds the guard (owned backends) or the mapping (mapped backend).
#![deny(missing_docs)]

mod api;
mod error;
mod handle;
mod types;

pub use api::*;
pub use error::FfiError;
pub use types::*;
