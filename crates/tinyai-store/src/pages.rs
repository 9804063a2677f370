//! Pages shared by neighbouring layers of a directly opened file.
//!
//! A layer of a safetensors or GGUF file need not start or end on a page
//! boundary, so its first and last pages may also hold bytes of another layer.
//! When a layer is evicted, its interior pages are dropped at once; a boundary
//! page is dropped only when no other layer that touches it is resident (so a
//! pinned neighbour's bytes stay resident, and an evicted pair leaves nothing
//! behind). `.tmai` layers are aligned and have no such neighbours.

use crate::shared::Shared;
use crate::slot::SlotState;
use crate::source::page_size;

/// For each layer, the other layers whose bytes lie on any page it covers
/// (empty when it shares no page: always for aligned layers). Usually these
/// are the neighbours on its first and last page; when a layer's tensors are
/// not adjacent in the file, its range may also overlap other layers' ranges.
pub(crate) fn page_neighbours(spans: &[(u64, u64)], page: u64) -> Vec<Vec<u32>> {
    let mut by_start: Vec<(u64, u64, u32)> = spans
        .iter()
        .enumerate()
        .filter(|&(_, &(_, length))| length > 0)
        .map(|(index, &(offset, length))| (offset, offset + length, index as u32))
        .collect();
    by_start.sort_unstable();
    let longest = spans.iter().map(|&(_, length)| length).max().unwrap_or(0);
    spans
        .iter()
        .enumerate()
        .map(|(index, &(offset, length))| {
            if length == 0 {
                return Vec::new();
            }
            let low = offset / page * page;
            let high = (offset + length).next_multiple_of(page);
            let cut = by_start.partition_point(|&(start, ..)| start < high);
            let mut out: Vec<u32> = by_start[..cut]
                .iter()
                .rev()
                .take_while(|&&(start, ..)| start.saturating_add(longest) > low)
                .filter(|&&(_, end, other)| end > low && other != index as u32)
                .map(|&(.., other)| other)
                .collect();
            out.sort_unstable();
            out
        })
        .collect()
}

impl Shared {
    /// The range whose whole pages an eviction of layer `index` drops: its own
    /// range, widened to a partly shared boundary page when no layer touching
    /// that page is resident, or nothing at all when a resident layer's bytes
    /// lie on its interior pages (layers whose tensors interleave in the file:
    /// dropping would discard that layer's private pages, e.g. a C caller's
    /// writes). A neighbour that starts loading meanwhile only refaults the
    /// page: bytes are never at stake, only residency.
    pub(crate) fn droppable_span(&self, index: u64) -> (u64, u64) {
        let (offset, length) = self.span(index);
        let Some(neighbours) = self.page_neighbours.get(index as usize) else {
            return (offset, length);
        };
        if neighbours.is_empty() {
            return (offset, length);
        }
        let page = page_size();
        let end = offset + length;
        let first_page = offset / page * page;
        let last_page = end / page * page;
        let (interior_start, interior_end) = (offset.next_multiple_of(page), last_page);
        let (mut first_free, mut last_free) = (true, true);
        for &other in neighbours {
            if matches!(
                self.slots.at(other as usize).load().state(),
                SlotState::Absent | SlotState::Evicting
            ) {
                continue;
            }
            let (start, len) = self.span(u64::from(other));
            let stop = start + len;
            if start < interior_end && stop > interior_start {
                return (offset, 0);
            }
            first_free &= !(start < first_page + page && stop > first_page);
            last_free &= !(start < last_page + page && stop > last_page);
        }
        let start = if !offset.is_multiple_of(page) && first_free {
            first_page
        } else {
            offset
        };
        let stop = if !end.is_multiple_of(page) && last_free {
            (last_page + page).min(self.source.length().next_multiple_of(page))
        } else {
            end
        };
        (start, stop - start)
    }
}

impl Shared {
    /// Whether layer `index` holds memory or is about to (neither `Absent`
    /// nor `Evicting`): its pages must not be dropped from the page cache.
    fn in_use(&self, index: u32) -> bool {
        !matches!(
            self.slots.at(index as usize).load().state(),
            SlotState::Absent | SlotState::Evicting
        )
    }

    /// Layers (other than `skip`) whose ranges meet `low..high`.
    fn layers_meeting(&self, low: u64, high: u64, skip: u64) -> impl Iterator<Item = u32> + '_ {
        let cut = self
            .by_offset
            .partition_point(|&index| self.spans[index as usize].0 < high);
        self.by_offset[..cut]
            .iter()
            .rev()
            .take_while(move |&&index| {
                self.spans[index as usize].0.saturating_add(self.longest) > low
            })
            .filter(move |&&index| {
                let (start, length) = self.spans[index as usize];
                length > 0 && start + length > low && u64::from(index) != skip
            })
            .copied()
    }

    /// The end of the longest run `from..end`, `end <= limit`, that no page
    /// of a layer in use (other than `skip`) lies in.
    pub(crate) fn free_until(&self, from: u64, limit: u64, skip: u64) -> u64 {
        let page = page_size();
        let mut end = limit;
        for other in self.layers_meeting(from, limit, skip) {
            if self.in_use(other) {
                let start = self.spans[other as usize].0 / page * page;
                end = end.min(start);
            }
        }
        end.max(from)
    }

    /// The start of the longest run `start..to`, `start >= limit`, that no
    /// page of a layer in use (other than `skip`) lies in.
    pub(crate) fn free_from(&self, to: u64, limit: u64, skip: u64) -> u64 {
        let page = page_size();
        let mut start = limit;
        for other in self.layers_meeting(limit, to, skip) {
            if self.in_use(other) {
                let (offset, length) = self.spans[other as usize];
                start = start.max((offset + length).next_multiple_of(page));
            }
        }
        start.min(to)
    }

    /// Drops layer `index`'s pages (mapped backend): its whole pages from the
    /// mapping, and unless `keep_page_cache`, the page cache's pages of its
    /// [`cache_drop_span`](Shared::cache_drop_span).
    pub(crate) fn drop_layer_pages(&self, index: u64) {
        let (offset, length) = self.droppable_span(index);
        let cached = (!self.config.keep_page_cache).then(|| self.cache_drop_span(index));
        self.source.drop_pages(offset, length, cached);
    }

    /// The range an eviction of layer `index` drops from the page cache: its
    /// [`droppable_span`](Shared::droppable_span), widened to the largest
    /// folio's boundaries into neighbours not in use. The page cache holds
    /// large folios (read-ahead makes them), and a drop only takes a folio
    /// lying entirely inside its range: without widening, every folio
    /// straddling two layers would stay cached after both were evicted.
    pub(crate) fn cache_drop_span(&self, index: u64) -> (u64, u64) {
        let (start, length) = self.droppable_span(index);
        if length == 0 {
            return (start, 0);
        }
        let folio = crate::readahead::largest_folio(page_size());
        let end = start + length;
        let file_end = self.source.length().next_multiple_of(page_size());
        let low = self.free_from(start, start / folio * folio, index);
        let high = self.free_until(end, end.next_multiple_of(folio).min(file_end), index);
        (low, high - low)
    }
}

#[cfg(test)]
mod tests {
    use super::page_neighbours;

    #[test]
    fn neighbours_are_the_layers_sharing_a_boundary_page() {
        // 0: 100..5000, 1: 5000..5100, 2: 5100..8192 (aligned end), 3: 8192..12288 (aligned),
        // 4: 20000..40000 and 5: 24576..28000, inside 4's range (interleaved tensors).
        let spans = [
            (100, 4900),
            (5000, 100),
            (5100, 3092),
            (8192, 4096),
            (20_000, 20_000),
            (24_576, 3424),
        ];
        let neighbours = page_neighbours(&spans, 4096);
        assert_eq!(neighbours[0], [1, 2]);
        assert_eq!(neighbours[1], [0, 2]);
        assert_eq!(neighbours[2], [0, 1]);
        assert!(neighbours[3].is_empty());
        assert_eq!(neighbours[4], [5]);
        assert_eq!(neighbours[5], [4]);
    }
}
