//! The forward-pass helper: iterate layers while the next ones load.

use crate::error::StoreError;
use crate::guard::LayerGuard;
use crate::model::MappedModel;

/// Yields each layer of a declared order with its guard, having already asked for
/// the next `lookahead` layers to be prefetched, so that computing on one layer
/// overlaps with reading the next. Created by [`MappedModel::forward_pass`].
///
/// The order stays declared to the cache after the iterator ends (so that the next
/// pass over the same order benefits); clear it with
/// [`MappedModel::set_access_order`]`(None)`.
#[derive(Debug)]
pub struct ForwardPass<'m> {
    model: &'m MappedModel,
    order: Vec<u64>,
    position: usize,
}

impl<'m> ForwardPass<'m> {
    pub(crate) fn new(model: &'m MappedModel, order: Vec<u64>) -> Self {
        ForwardPass {
            model,
            order,
            position: 0,
        }
    }
}

impl<'m> Iterator for ForwardPass<'m> {
    type Item = Result<LayerGuard<'m>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let &layer = self.order.get(self.position)?;
        self.position += 1;
        let guard = self.model.get(layer);
        self.model.prefetch_upcoming(&self.order[self.position..]);
        Some(guard)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.position;
        (left, Some(left))
    }
}
