//! candle [`SimpleBackend`]s over the store: [`StoreBackend`] finds any
//! tensor of an open model by name; [`LayerBackend`] serves the tensors of
//! one pinned layer, for building one block's modules at a time.

use std::collections::HashMap;

use candle_core::{DType, Device, Error, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use tinyai_store::{LayerGuard, MappedModel};

use crate::tensor;

/// Which layer holds each tensor of a model, by name.
#[derive(Debug, Clone)]
pub struct TensorIndex {
    layers: HashMap<String, u64>,
}

impl TensorIndex {
    /// Indexes every tensor of `model` (from its tables; nothing is loaded).
    ///
    /// # Errors
    /// A table the format crate rejects (not expected of a model that opened).
    pub fn new(model: &MappedModel) -> Result<TensorIndex> {
        let format = model.format();
        let mut layers = HashMap::new();
        for layer in 0..model.layer_count() {
            for info in format.layer_tensors(layer).map_err(Error::wrap)? {
                layers.insert(info.name.to_owned(), layer);
            }
        }
        Ok(TensorIndex { layers })
    }

    /// The layer holding the tensor called `name`.
    #[must_use]
    pub fn layer_of(&self, name: &str) -> Option<u64> {
        self.layers.get(name).copied()
    }

    /// The layer holding `name`, or candle's "cannot find tensor" error.
    ///
    /// # Errors
    /// No tensor of that name.
    pub fn require(&self, name: &str) -> Result<u64> {
        self.layer_of(name).ok_or_else(|| Error::CannotFindTensor {
            path: name.to_owned(),
        })
    }
}

/// Reads one whole tensor into a candle tensor: through the cache (a pinned,
/// checksum-verified layer) when its layer fits the budget, else straight
/// from the file with [`MappedModel::read_tensor_bytes`] (nothing charged).
///
/// # Errors
/// Store errors (I/O, checksum) and unsupported dtypes, naming the tensor.
pub fn read_tensor(model: &MappedModel, layer: u64, name: &str, device: &Device) -> Result<Tensor> {
    let store_error = |error| Error::Msg(format!("tensor {name:?}: {error}"));
    let fits =
        model.descriptor(layer).map_err(store_error)?.charge <= model.config().max_cache_size;
    if fits {
        let guard = model.get(layer).map_err(store_error)?;
        let view = guard.tensor(name).map_err(store_error)?;
        return tensor::from_bytes(name, &view.info, view.bytes, device);
    }
    let info = model
        .format()
        .find_tensor(layer, name)
        .map_err(Error::wrap)?
        .ok_or_else(|| Error::CannotFindTensor {
            path: name.to_owned(),
        })?;
    let length = usize::try_from(info.length)
        .map_err(|_| Error::Msg(format!("tensor {name:?}: too large for this machine")))?;
    let mut bytes = vec![0u8; length];
    model
        .read_tensor_bytes(layer, name, 0, &mut bytes)
        .map_err(store_error)?;
    tensor::from_bytes(name, &info, &bytes, device)
}

/// A candle backend that finds any tensor of an open model by name, so
/// [`VarBuilder::from_backend`] builds a whole candle model from a `.tmai`
/// file ([`model_var_builder`]). Each tensor is copied out of its layer
/// (candle's CPU tensors own their memory), so building a model this way
/// holds every weight in memory, as candle always does: to stay under a
/// budget smaller than the model, build one block at a time from a
/// [`LayerBackend`] instead.
#[derive(Debug)]
pub struct StoreBackend<'m> {
    model: &'m MappedModel,
    index: TensorIndex,
}

impl<'m> StoreBackend<'m> {
    /// Indexes `model`'s tensors.
    ///
    /// # Errors
    /// See [`TensorIndex::new`].
    pub fn new(model: &'m MappedModel) -> Result<StoreBackend<'m>> {
        Ok(StoreBackend {
            model,
            index: TensorIndex::new(model)?,
        })
    }

    fn load(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let layer = self.index.require(name)?;
        let tensor = read_tensor(self.model, layer, name, dev)?;
        tensor::checked(name, tensor, shape, dtype)
    }
}

impl SimpleBackend for StoreBackend<'_> {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.layer_of(name).is_some()
    }
}

/// A candle backend over one pinned layer: the tensors of the layer the
/// engine just got (from [`MappedModel::get`] or a
/// [`tinyai_store::ForwardPass`]), so it can build that block's modules, run
/// them, and drop them while the next layer prefetches.
///
/// Names are the stored ones (`encoder.layer.3.attention.self.query.weight`);
/// [`LayerBackend::alias`] maps the prefix a module asks for onto the stored
/// one, so a module written for block 0 can be built from block 3.
#[derive(Debug)]
pub struct LayerBackend<'g> {
    guard: LayerGuard<'g>,
    aliases: Vec<(String, String)>,
}

impl<'g> LayerBackend<'g> {
    /// Serves `guard`'s tensors (the layer stays pinned while the backend, or
    /// a [`VarBuilder`] made from it, lives).
    #[must_use]
    pub fn new(guard: LayerGuard<'g>) -> LayerBackend<'g> {
        LayerBackend {
            guard,
            aliases: Vec::new(),
        }
    }

    /// Requests for names starting with `requested` are served by the
    /// stored tensor whose name starts with `stored` instead (the rest of the
    /// name unchanged). Aliases are tried in the order added; names matching
    /// none are looked up as they are.
    #[must_use]
    pub fn alias(mut self, requested: impl Into<String>, stored: impl Into<String>) -> Self {
        self.aliases.push((requested.into(), stored.into()));
        self
    }

    /// A [`VarBuilder`] over this layer.
    #[must_use]
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'g> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn stored_name(&self, name: &str) -> String {
        for (requested, stored) in &self.aliases {
            if let Some(rest) = name.strip_prefix(requested.as_str()) {
                return format!("{stored}{rest}");
            }
        }
        name.to_owned()
    }

    fn load(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let stored = self.stored_name(name);
        let view = self.guard.tensor(&stored).map_err(|error| match error {
            tinyai_store::StoreError::NoSuchTensor { .. } => Error::CannotFindTensor {
                path: stored.clone(),
            },
            other => Error::Msg(format!("tensor {stored:?}: {other}")),
        })?;
        let tensor = tensor::from_bytes(&stored, &view.info, view.bytes, dev)?;
        tensor::checked(&stored, tensor, shape, dtype)
    }
}

impl SimpleBackend for LayerBackend<'_> {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.guard.tensor(&self.stored_name(name)).is_ok()
    }
}

/// A [`VarBuilder`] that builds any candle model from an open `.tmai` model
/// by tensor name (every weight copied into memory; see [`StoreBackend`]).
///
/// # Errors
/// See [`TensorIndex::new`].
pub fn model_var_builder<'m>(
    model: &'m MappedModel,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'m>> {
    Ok(VarBuilder::from_backend(
        Box::new(StoreBackend::new(model)?),
        dtype,
        device.clone(),
    ))
}
