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

/// For each layer, the other layers that touch its first or last page when
/// that page is only partly the layer's (empty when both ends are aligned).
pub(crate) fn page_neighbours(spans: &[(u64, u64)], page: u64) -> Vec<Vec<u32>> {
    let mut by_start: Vec<(u64, u64, u32)> = spans
        .iter()
        .enumerate()
        .map(|(index, &(offset, length))| (offset, offset + length, index as u32))
        .collect();
    by_start.sort_unstable();
    let longest = spans.iter().map(|&(_, length)| length).max().unwrap_or(0);
    // The layers other than `me` whose range meets the page at `page_start`.
    let touching = |page_start: u64, me: u32, out: &mut Vec<u32>| {
        let page_end = page_start + page;
        let cut = by_start.partition_point(|&(start, ..)| start < page_end);
        for &(start, end, index) in by_start[..cut].iter().rev() {
            if start.saturating_add(longest) < page_start {
                break;
            }
            if end > page_start && index != me && !out.contains(&index) {
                out.push(index);
            }
        }
    };
    spans
        .iter()
        .enumerate()
        .map(|(index, &(offset, length))| {
            let mut out = Vec::new();
            let end = offset + length;
            if length > 0 && !offset.is_multiple_of(page) {
                touching(offset / page * page, index as u32, &mut out);
            }
            if length > 0 && !end.is_multiple_of(page) {
                touching(end / page * page, index as u32, &mut out);
            }
            out
        })
        .collect()
}

impl Shared {
    /// The range whose whole pages an eviction of layer `index` drops: its own
    /// range, widened to a partly shared boundary page when no layer touching
    /// that page is resident. (A neighbour that starts loading meanwhile only
    /// refaults the page: bytes are never at stake, only residency.)
    pub(crate) fn droppable_span(&self, index: u64) -> (u64, u64) {
        let (offset, length) = self.span(index);
        let Some(neighbours) = self.page_neighbours.get(index as usize) else {
            return (offset, length);
        };
        if neighbours.is_empty() {
            return (offset, length);
        }
        let page = page_size();
        let free = |page_start: u64| {
            neighbours.iter().all(|&other| {
                let (start, len) = self.span(u64::from(other));
                start + len <= page_start
                    || start >= page_start + page
                    || matches!(
                        self.slots.at(other as usize).load().state(),
                        SlotState::Absent | SlotState::Evicting
                    )
            })
        };
        let end = offset + length;
        let first_page = offset / page * page;
        let start = if !offset.is_multiple_of(page) && free(first_page) {
            first_page
        } else {
            offset
        };
        let last_page = end / page * page;
        let stop = if !end.is_multiple_of(page) && free(last_page) {
            (last_page + page).min(self.source.length().next_multiple_of(page))
        } else {
            end
        };
        (start, stop - start)
    }
}

#[cfg(test)]
mod tests {
    use super::page_neighbours;

    #[test]
    fn neighbours_are_the_layers_sharing_a_boundary_page() {
        // 0: 100..5000, 1: 5000..5100, 2: 5100..8192 (aligned end), 3: 8192..12288 (aligned).
        let spans = [(100, 4900), (5000, 100), (5100, 3092), (8192, 4096)];
        let neighbours = page_neighbours(&spans, 4096);
        assert_eq!(neighbours[0], [2, 1]);
        assert_eq!(neighbours[1], [2, 0]);
        assert_eq!(neighbours[2], [1, 0]);
        assert!(neighbours[3].is_empty());
    }
}
