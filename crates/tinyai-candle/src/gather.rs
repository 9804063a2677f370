//! Rows of a table far larger than the budget (a vocabulary embedding, a
//! tied LM head), gathered from the file without loading the layer.

use candle_core::{DType, Device, Error, Result, Tensor};
use tinyai_store::MappedModel;

use crate::tensor;

/// Gathers rows `ids` of the 2-D tensor `name` of layer `layer` into a
/// `[ids.len(), width]` tensor, reading each distinct row once with
/// [`MappedModel::read_tensor_bytes`]: the layer is neither loaded nor
/// charged, only the rows' bytes are read. This is `Embedding::forward`
/// for an embedding table that does not fit the budget.
///
/// # Errors
/// A missing tensor, a tensor that is not 2-D or has no candle dtype, an id
/// out of range, or a store error; each names the tensor.
pub fn gather_rows(
    model: &MappedModel,
    layer: u64,
    name: &str,
    ids: &[u32],
    device: &Device,
) -> Result<Tensor> {
    let info = model
        .format()
        .find_tensor(layer, name)
        .map_err(Error::wrap)?
        .ok_or_else(|| Error::CannotFindTensor {
            path: name.to_owned(),
        })?;
    let dtype: DType = tensor::stored_dtype(name, &info)?;
    let dims = tensor::dims(name, &info)?;
    let &[rows, width] = dims.as_slice() else {
        return Err(Error::Msg(format!(
            "tensor {name:?}: rows can be gathered from a 2-D tensor, not {dims:?}"
        )));
    };
    let row_bytes = width * dtype.size_in_bytes();
    let mut out = vec![0u8; ids.len() * row_bytes];
    // Each distinct row is read once, in ascending order (file order).
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&position| ids[position]);
    let mut previous: Option<(u32, usize)> = None;
    for position in order {
        let id = ids[position];
        if id as usize >= rows {
            return Err(Error::Msg(format!(
                "tensor {name:?}: row {id} out of range ({rows} rows)"
            )));
        }
        let (start, end) = (position * row_bytes, (position + 1) * row_bytes);
        match previous {
            Some((same, from)) if same == id => out.copy_within(from..from + row_bytes, start),
            _ => model
                .read_tensor_bytes(
                    layer,
                    name,
                    id as u64 * row_bytes as u64,
                    &mut out[start..end],
                )
                .map_err(|error| Error::Msg(format!("tensor {name:?}: {error}")))?,
        }
        previous = Some((id, start));
    }
    Tensor::from_raw_buffer(&out, dtype, &[ids.len(), width], device)
}
