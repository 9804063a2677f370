//! Access streams: one pattern detector per thread and model.
//!
//! Automatic prefetch follows each *stream* of demand accesses on its own, so
//! two threads making sequential passes do not look random to each other (the
//! detection rules live in [`tinyai_cache::stream::PatternDetector`]). A
//! stream is the calling thread: its detector lives in a thread-local table
//! keyed by model, so observing an access takes no lock. When the thread
//! exits, its stream is forgotten and its unused read-aheads are dropped.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use tinyai_cache::LayerId;
use tinyai_cache::stream::{AccessOrder, Observation, PatternDetector, StreamId};

use crate::shared::Shared;

/// Most models one thread keeps a stream for (older ones are forgotten).
const MAX_STREAMS_PER_THREAD: usize = 16;

struct Stream {
    uid: u64,
    shared: Weak<Shared>,
    id: StreamId,
    detector: PatternDetector,
    /// The declared order this detector was last given, and its version.
    order: Option<Arc<AccessOrder>>,
    order_version: u64,
    /// This stream issued read-aheads since its pattern last broke (a break
    /// then has something to cancel; otherwise it takes no lock).
    issued: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.forget_stream(self.id);
        }
    }
}

thread_local! {
    static STREAMS: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
    static THREAD_STREAM: StreamId = {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        StreamId(NEXT.fetch_add(1, Ordering::Relaxed))
    };
}

/// What observing one access yields.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) stream: StreamId,
    pub(crate) clock: u64,
    pub(crate) epoch: u64,
    /// The pattern broke and the stream had issued read-aheads since the last
    /// break: they are stale now.
    pub(crate) stale_reads: bool,
    pub(crate) observation: Observation,
}

/// The calling thread's stream id (a fresh one during thread teardown).
pub(crate) fn current() -> StreamId {
    THREAD_STREAM.try_with(|id| *id).unwrap_or_else(|_| {
        static TEARDOWN: AtomicU32 = AtomicU32::new(u32::MAX / 2);
        StreamId(TEARDOWN.fetch_add(1, Ordering::Relaxed))
    })
}

/// Feeds a demand access of `index` to the calling thread's detector for `shared`.
pub(crate) fn observe(shared: &Shared, index: u64) -> Seen {
    let observe = |streams: &mut Vec<Stream>| {
        let position = match streams.iter().position(|s| s.uid == shared.uid) {
            Some(position) => position,
            None => {
                streams.retain(|s| s.shared.strong_count() > 0);
                if streams.len() >= MAX_STREAMS_PER_THREAD {
                    streams.remove(0);
                }
                streams.push(Stream {
                    uid: shared.uid,
                    shared: shared.this.clone(),
                    id: current(),
                    detector: PatternDetector::new(shared.spans.len(), shared.config.lookahead),
                    order: None,
                    order_version: u64::MAX,
                    issued: false,
                });
                streams.len() - 1
            }
        };
        let stream = &mut streams[position];
        let version = shared.order_version.load(Ordering::Acquire);
        if version != stream.order_version {
            stream.order = shared.lock().order.clone();
            stream.order_version = version;
        }
        let observation = stream
            .detector
            .on_access(LayerId(index as u32), stream.order.as_deref());
        let stale_reads = observation.broke && std::mem::take(&mut stream.issued);
        Seen {
            stream: stream.id,
            clock: stream.detector.clock(),
            epoch: stream.detector.epoch(),
            stale_reads,
            observation,
        }
    };
    // A stream entry dropped inside `observe` (a forgotten model) calls back
    // into its model; do that outside the borrow.
    // During thread teardown (a get from another thread-local's destructor) the
    // table may be gone: observe with a throw-away one.
    STREAMS
        .try_with(|streams| match streams.try_borrow_mut() {
            Ok(mut streams) => observe(&mut streams),
            Err(_) => observe(&mut Vec::new()),
        })
        .unwrap_or_else(|_| observe(&mut Vec::new()))
}

/// Notes that the calling thread's stream for `shared` issued read-aheads.
pub(crate) fn mark_issued(shared: &Shared) {
    let _ = STREAMS.try_with(|streams| {
        if let Ok(mut streams) = streams.try_borrow_mut()
            && let Some(stream) = streams.iter_mut().find(|s| s.uid == shared.uid)
        {
            stream.issued = true;
        }
    });
}
