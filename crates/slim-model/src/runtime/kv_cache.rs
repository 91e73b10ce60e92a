//! Keys and values of positions already processed: per layer ([`LayerKv`]) and for the whole
//! model ([`KvCache`]).

use anyhow::{ensure, Result};
use burn_tensor::{backend::Backend, Int, Tensor, TensorData};

/// Keys and values of every layer for positions already processed, per sequence.
pub struct KvCache<B: Backend> {
    batch: usize,
    layers: Vec<LayerKv<B>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache of `layers` layers for `batch` sequences.
    pub(crate) fn new(batch: usize, layers: usize) -> Self {
        Self { batch, layers: (0..layers).map(|_| LayerKv::new(batch)).collect() }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    /// True before the first call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequences held.
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [LayerKv<B>] {
        &mut self.layers
    }

    /// A cache whose sequence `i` is sequence `rows[i]` of this one (rows may repeat): the
    /// continuations of shared prefixes then cost one pass over each prefix.
    pub fn select(&self, rows: &[usize]) -> Result<KvCache<B>> {
        let layers = self.layers.iter().map(|c| c.select(rows)).collect::<Result<Vec<_>>>()?;
        Ok(KvCache { batch: rows.len(), layers })
    }
}

/// One decoder layer's keys and values for positions already processed, per sequence: what
/// [`crate::Llama::layer_cached`] reads and appends to.
pub struct LayerKv<B: Backend> {
    batch: usize,
    /// `[batch, len, hk·dh]`, RoPE applied.
    k: Option<Tensor<B, 3>>,
    v: Option<Tensor<B, 3>>,
    len: usize,
}

impl<B: Backend> LayerKv<B> {
    /// An empty cache for `batch` sequences.
    pub fn new(batch: usize) -> Self {
        Self { batch, k: None, v: None, len: 0 }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first call.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sequences held.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// A cache whose sequence `i` is sequence `rows[i]` of this one (rows may repeat).
    pub fn select(&self, rows: &[usize]) -> Result<LayerKv<B>> {
        ensure!(!rows.is_empty(), "selecting no sequence of a cache");
        ensure!(rows.iter().all(|&r| r < self.batch), "row out of range for a cache of {} sequences", self.batch);
        let sel = |t: &Option<Tensor<B, 3>>| {
            t.clone().map(|t| {
                let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &t.device());
                t.select(0, idx)
            })
        };
        Ok(LayerKv { batch: rows.len(), k: sel(&self.k), v: sel(&self.v), len: self.len })
    }

    /// Appends `t` new positions and returns all keys and values token-major with their count.
    ///
    /// # Shapes
    /// k, v: `[batch, t, w]` → `[batch·(len + t), w]` each
    pub(crate) fn append(&mut self, k: Tensor<B, 3>, v: Tensor<B, 3>) -> (Tensor<B, 2>, Tensor<B, 2>, usize) {
        let [b, t, w] = k.dims();
        let cat = |old: Option<Tensor<B, 3>>, new: Tensor<B, 3>| match old {
            Some(o) => Tensor::cat(vec![o, new], 1),
            None => new,
        };
        let (k, v) = (cat(self.k.take(), k), cat(self.v.take(), v));
        self.len += t;
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        (k.reshape([b * self.len, w]), v.reshape([b * self.len, w]), self.len)
    }
}
