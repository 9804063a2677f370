//! Intrusive doubly linked queues over layer ids, with byte totals: the
//! shared structure of the [`arc`](super::arc) and [`s3fifo`](super::s3fifo)
//! policies.
//!
//! Every id is in at most one of the `N` queues. The *front* of a queue is
//! its newest entry (MRU, or the head of a FIFO), the *back* its oldest (LRU,
//! the tail a FIFO evicts from). All operations are O(1) and allocate
//! nothing after construction.

const NIL: u32 = u32::MAX;
/// `Link::queue` of an id that is in no queue.
const NONE: u8 = u8::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    /// Towards the front (newer).
    newer: u32,
    /// Towards the back (older).
    older: u32,
    queue: u8,
    /// Bytes this entry counts for in its queue's total.
    bytes: u64,
}

/// `N` queues over the ids `0..layer_count`.
#[derive(Clone, Debug)]
pub(crate) struct Queues<const N: usize> {
    links: Vec<Link>,
    front: [u32; N],
    back: [u32; N],
    bytes: [u64; N],
    len: [usize; N],
}

impl<const N: usize> Queues<N> {
    pub(crate) fn new(layer_count: usize) -> Self {
        Queues {
            links: vec![
                Link {
                    newer: NIL,
                    older: NIL,
                    queue: NONE,
                    bytes: 0,
                };
                layer_count
            ],
            front: [NIL; N],
            back: [NIL; N],
            bytes: [0; N],
            len: [0; N],
        }
    }

    /// The queue holding `id`, if any.
    #[inline]
    pub(crate) fn queue_of(&self, id: u32) -> Option<usize> {
        self.links
            .get(id as usize)
            .and_then(|l| (l.queue != NONE).then_some(l.queue as usize))
    }

    /// Sum of the bytes of the entries of `queue`.
    #[inline]
    pub(crate) fn bytes(&self, queue: usize) -> u64 {
        self.bytes.get(queue).copied().unwrap_or(0)
    }

    /// Number of entries of `queue`.
    #[inline]
    pub(crate) fn len(&self, queue: usize) -> usize {
        self.len.get(queue).copied().unwrap_or(0)
    }

    /// The oldest entry of `queue`.
    #[inline]
    pub(crate) fn back(&self, queue: usize) -> Option<u32> {
        self.back.get(queue).copied().filter(|&id| id != NIL)
    }

    /// The entry just newer than `id` in its queue (towards the front).
    #[inline]
    pub(crate) fn newer(&self, id: u32) -> Option<u32> {
        self.links
            .get(id as usize)
            .map(|l| l.newer)
            .filter(|&n| n != NIL)
    }

    /// Removes `id` from its queue; returns the queue and the bytes it counted.
    pub(crate) fn remove(&mut self, id: u32) -> Option<(usize, u64)> {
        let link = *self.links.get(id as usize)?;
        if link.queue == NONE {
            return None;
        }
        let queue = link.queue as usize;
        match self.links.get_mut(link.newer as usize) {
            Some(n) => n.older = link.older,
            None => {
                if let Some(f) = self.front.get_mut(queue) {
                    *f = link.older;
                }
            }
        }
        match self.links.get_mut(link.older as usize) {
            Some(o) => o.newer = link.newer,
            None => {
                if let Some(b) = self.back.get_mut(queue) {
                    *b = link.newer;
                }
            }
        }
        if let Some(total) = self.bytes.get_mut(queue) {
            *total = total.saturating_sub(link.bytes);
        }
        if let Some(len) = self.len.get_mut(queue) {
            *len = len.saturating_sub(1);
        }
        if let Some(l) = self.links.get_mut(id as usize) {
            *l = Link {
                newer: NIL,
                older: NIL,
                queue: NONE,
                bytes: 0,
            };
        }
        Some((queue, link.bytes))
    }

    /// Puts `id` at the front of `queue` counting `bytes` (removing it from
    /// its queue first, if any).
    pub(crate) fn push_front(&mut self, queue: usize, id: u32, bytes: u64) {
        if queue >= N || id as usize >= self.links.len() {
            return;
        }
        self.remove(id);
        let old_front = self.front.get(queue).copied().unwrap_or(NIL);
        if let Some(l) = self.links.get_mut(id as usize) {
            *l = Link {
                newer: NIL,
                older: old_front,
                queue: queue as u8,
                bytes,
            };
        }
        match self.links.get_mut(old_front as usize) {
            Some(f) => f.newer = id,
            None => {
                if let Some(b) = self.back.get_mut(queue) {
                    *b = id;
                }
            }
        }
        if let Some(f) = self.front.get_mut(queue) {
            *f = id;
        }
        if let Some(total) = self.bytes.get_mut(queue) {
            *total = total.saturating_add(bytes);
        }
        if let Some(len) = self.len.get_mut(queue) {
            *len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn order<const N: usize>(q: &Queues<N>, queue: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = q.back(queue);
        while let Some(id) = at {
            out.push(id);
            at = q.newer(id);
        }
        out
    }

    #[test]
    fn push_remove_and_move_between_queues() {
        let mut q: Queues<2> = Queues::new(5);
        q.push_front(0, 1, 10);
        q.push_front(0, 2, 20);
        q.push_front(0, 3, 30);
        assert_eq!(order(&q, 0), vec![1, 2, 3]);
        assert_eq!((q.bytes(0), q.len(0)), (60, 3));
        q.push_front(1, 2, 25);
        assert_eq!(order(&q, 0), vec![1, 3]);
        assert_eq!(order(&q, 1), vec![2]);
        assert_eq!((q.bytes(0), q.bytes(1)), (40, 25));
        assert_eq!(q.remove(1), Some((0, 10)));
        assert_eq!(q.remove(1), None);
        assert_eq!(order(&q, 0), vec![3]);
        q.push_front(0, 3, 30);
        assert_eq!(order(&q, 0), vec![3]);
        assert_eq!(q.queue_of(3), Some(0));
        assert_eq!(q.queue_of(4), None);
        q.remove(3);
        assert_eq!((q.back(0), q.bytes(0), q.len(0)), (None, 0, 0));
    }
}
