//! Turning a `.tmai` tensor's bytes into a candle [`Tensor`], with the checks
//! every backend shares: dtype support and conversion, shape, and errors
//! that name the tensor.

use candle_core::{DType, Device, Error, Result, Shape, Tensor};
use tinyai_format::TensorInfo;

use crate::dtype::{candle_dtype, converts};

/// The tensor's shape as candle dims.
pub(crate) fn dims(name: &str, info: &TensorInfo<'_>) -> Result<Vec<usize>> {
    info.shape()
        .iter()
        .map(|&dim| {
            usize::try_from(dim)
                .map_err(|_| Error::Msg(format!("tensor {name:?}: dimension {dim} too large")))
        })
        .collect()
}

/// The candle dtype of a stored tensor, or an error naming it.
pub(crate) fn stored_dtype(name: &str, info: &TensorInfo<'_>) -> Result<DType> {
    candle_dtype(info.dtype).ok_or_else(|| {
        Error::Msg(format!(
            "tensor {name:?}: dtype {} has no candle equivalent",
            info.dtype
        ))
    })
}

/// Builds a tensor from `bytes` (the stored tensor's bytes; copied).
pub(crate) fn from_bytes(
    name: &str,
    info: &TensorInfo<'_>,
    bytes: &[u8],
    device: &Device,
) -> Result<Tensor> {
    let dtype = stored_dtype(name, info)?;
    let shape = dims(name, info)?;
    Tensor::from_raw_buffer(bytes, dtype, &shape, device)
        .map_err(|error| Error::Msg(format!("tensor {name:?}: {error}")))
}

/// Checks `tensor` (stored as `name`) against what a module asked for, and
/// converts between float types.
pub(crate) fn checked(
    name: &str,
    tensor: Tensor,
    expected: Option<&Shape>,
    requested: DType,
) -> Result<Tensor> {
    if let Some(expected) = expected
        && tensor.shape() != expected
    {
        return Err(Error::UnexpectedShape {
            msg: format!("tensor {name:?}: stored shape differs from the module's"),
            expected: expected.clone(),
            got: tensor.shape().clone(),
        });
    }
    if !converts(tensor.dtype(), requested) {
        return Err(Error::Msg(format!(
            "tensor {name:?}: stored as {:?}, requested as {requested:?} (only float types convert)",
            tensor.dtype()
        )));
    }
    tensor.to_dtype(requested)
}
