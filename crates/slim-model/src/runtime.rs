//! The decoder: weights on a burn device and the batched forward pass, whole or layer by layer.

use crate::kernels::{self, AttnDims};
use crate::lora::LayerLora;
use crate::rope::{RopeMemo, RopeTables};
use crate::taps::{LayerTaps, TapSet};
use anyhow::{ensure, Context, Result};
use burn_tensor::{backend::Backend, DType, Int, Tensor, TensorData};
use slim_checkpoint::layout::{Activation, Global, LayerNorm, NormKind, Proj};
use slim_checkpoint::{HostTensor, LayerShape, ModelConfig, WeightDtype, WeightSource, Weights};
use std::path::Path;

mod kv_cache;
mod lora_grad;

pub use kv_cache::{KvCache, LayerKv};

/// A linear map stored transposed (`[in, out]`) so that `x @ wt` needs no transpose; or, with
/// half-precision weights ([`Llama::load_in`]), as stored (`[out, in]`), so that decoding reads
/// each output's weights contiguously.
struct Linear<B: Backend> {
    /// `[in, out]` in f32, or `[out, in]` in f16 / bf16 when `stored`.
    wt: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    stored: bool,
}

impl<B: Backend> Linear<B> {
    fn load(w: &Weights, prefix: &str, has_bias: bool, device: &B::Device, dtype: DType) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"))?;
        ensure!(weight.shape.len() == 2, "`{prefix}.weight` is not 2-D");
        let bias =
            if has_bias { Some(host_to_tensor::<B, 1>(w.get(&format!("{prefix}.bias"))?, device)?) } else { None };
        Self::new(weight, bias, device, dtype)
    }

    /// Several maps of the same input as one: their weights (and biases) stacked by output
    /// rows (`[Σ out, in]`), stored transposed.
    fn stacked(w: &Weights, prefixes: &[&str], has_bias: bool, device: &B::Device, dtype: DType) -> Result<Self> {
        let mut parts = Vec::with_capacity(prefixes.len());
        let mut bias = Vec::new();
        for prefix in prefixes {
            let t = w.get(&format!("{prefix}.weight"))?;
            ensure!(t.shape.len() == 2, "`{prefix}.weight` is not 2-D");
            let cols = parts.first().map_or(t.shape[1], |p: &&HostTensor| p.shape[1]);
            ensure!(t.shape[1] == cols, "`{prefix}.weight` has {} inputs, the others {cols}", t.shape[1]);
            if has_bias {
                let b = w.get(&format!("{prefix}.bias"))?;
                ensure!(b.shape == [t.shape[0]], "`{prefix}.bias` has shape {:?}, expected [{}]", b.shape, t.shape[0]);
                bias.extend_from_slice(&b.data);
            }
            parts.push(t);
        }
        let rows = parts.iter().map(|t| t.shape[0]).sum();
        let bias =
            if has_bias { Some(host_to_tensor::<B, 1>(&HostTensor::new(vec![rows], bias)?, device)?) } else { None };
        if dtype == DType::F32 {
            // Stacked and transposed in one pass, and moved to the device without a copy.
            let wt = host_into_tensor(HostTensor::stack_transposed(&parts)?, device)?;
            return Ok(Self { wt, bias, stored: false });
        }
        let cols = parts.first().map_or(0, |t| t.shape[1]);
        let data = parts.iter().flat_map(|t| t.data.iter().copied()).collect();
        Self::new(&HostTensor::new(vec![rows, cols], data)?, bias, device, dtype)
    }

    /// The map of `weight` (`[out, in]`, as HF stores it) in `dtype`: f32 transposed once on the
    /// host so every matmul reads contiguous memory, half precision as it is.
    fn new(weight: &HostTensor, bias: Option<Tensor<B, 1>>, device: &B::Device, dtype: DType) -> Result<Self> {
        let stored = dtype != DType::F32;
        let wt = if stored {
            host_to_tensor_as(weight, device, dtype)?
        } else {
            host_into_tensor(weight.transpose2()?, device)?
        };
        Ok(Self { wt, bias, stored })
    }

    /// # Shapes
    /// x: `[n, in]` → `[n, out]`
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.stored {
            return kernels::linear_stored(x, &self.wt, self.bias.as_ref());
        }
        kernels::linear(x, &self.wt, self.bias.as_ref())
    }
}

struct Layer<B: Backend> {
    shape: LayerShape,
    input_norm: Tensor<B, 1>,
    post_norm: Tensor<B, 1>,
    /// q_proj, k_proj and v_proj as one map (`[d, (hq + 2·hk)·dh]`), one matmul per layer.
    qkv: Linear<B>,
    o: Linear<B>,
    /// gate_proj and up_proj as one map (`[d, 2f]`: gate columns, then up columns), so the
    /// MLP's input is read once by one wider matmul.
    gate_up: Linear<B>,
    down: Linear<B>,
    kv_index: Tensor<B, 1, Int>,
    /// LoRA adapters ([`Llama::set_lora`]), added to the projections' outputs.
    lora: Option<LayerLora<B>>,
}

/// `lin(x)` plus the adapters of `group` (the projections `lin` stacks, with output widths
/// `widths`) when the layer has any.
fn adapted<B: Backend>(
    lin: &Linear<B>,
    lora: Option<&LayerLora<B>>,
    group: &[Proj],
    widths: &[usize],
    x: Tensor<B, 2>,
) -> Tensor<B, 2> {
    match lora.and_then(|lo| lo.delta(group, widths, &x)) {
        Some(d) => lin.forward(x) + d,
        None => lin.forward(x),
    }
}

/// A layer's attention half: its input norm, q/k/v stacked, o and the KV head of each head.
type AttentionPart<B> = (Tensor<B, 1>, Linear<B>, Linear<B>, Tensor<B, 1, Int>);

impl<B: Backend> Layer<B> {
    /// Layer `i` of `cfg` from `w`, its projections' weights kept in `dtype` (norms and biases in f32).
    fn load(cfg: &ModelConfig, i: usize, w: &Weights, device: &B::Device, dtype: DType) -> Result<Self> {
        let (input_norm, qkv, o, kv_index) = Self::load_attention(cfg, i, w, device, dtype)?;
        let gate_up = [Proj::Gate, Proj::Up].map(|p| p.module(i));
        Ok(Layer {
            input_norm,
            post_norm: host_to_tensor(w.get(&LayerNorm::PostAttention.weight(i))?, device)?,
            qkv,
            o,
            gate_up: Linear::stacked(
                w,
                &gate_up.each_ref().map(String::as_str),
                Proj::Gate.has_bias(cfg, i),
                device,
                dtype,
            )?,
            down: Linear::load(w, &Proj::Down.module(i), Proj::Down.has_bias(cfg, i), device, dtype)?,
            kv_index,
            lora: None,
            shape: cfg.layers[i].clone(),
        })
    }

    /// The attention half of layer `i` of `cfg` from `w`.
    fn load_attention(
        cfg: &ModelConfig,
        i: usize,
        w: &Weights,
        device: &B::Device,
        dtype: DType,
    ) -> Result<AttentionPart<B>> {
        let shape = &cfg.layers[i];
        let kv: Vec<i32> = shape.kv_head_of.iter().map(|&k| k as i32).collect();
        let qkv = [Proj::Q, Proj::K, Proj::V].map(|p| p.module(i));
        Ok((
            host_to_tensor(w.get(&LayerNorm::Input.weight(i))?, device)?,
            Linear::stacked(w, &qkv.each_ref().map(String::as_str), Proj::Q.has_bias(cfg, i), device, dtype)?,
            Linear::load(w, &Proj::O.module(i), Proj::O.has_bias(cfg, i), device, dtype)?,
            Tensor::from_data(TensorData::new(kv, [shape.num_heads]), device),
        ))
    }
}

/// A LLaMA-family decoder on backend `B`.
///
/// A model built by [`Llama::from_weights`] holds every weight. One built by [`Llama::empty`] holds
/// none until they are loaded one at a time ([`Llama::load_layer`], [`Llama::load_embedding`]): the
/// layer-streaming passes of the pipeline keep one decoder layer on the device and run the layers
/// one after another. Running a part that is not loaded panics naming it (a bug of the caller).
pub struct Llama<B: Backend> {
    cfg: ModelConfig,
    embed: Option<Tensor<B, 2>>,
    layers: Vec<Option<Layer<B>>>,
    norm: Option<Tensor<B, 1>>,
    lm_head: Option<Linear<B>>,
    /// The norm of every layer and of the output, from the config (`layout::NormKind::of`).
    norm_kind: NormKind,
    /// The MLP's activation, from the config's `hidden_act` (`layout::Activation::of`).
    activation: Activation,
    /// The dtype projections loaded from now on keep their weights in ([`Llama::load_in`]).
    matmul_dtype: DType,
    /// The rotary tables of the positions the layers last ran on, shared by all of them.
    rope: RopeMemo<B>,
    device: B::Device,
}

/// Copies a host tensor to the device, checking its rank.
pub fn host_to_tensor<B: Backend, const D: usize>(t: &HostTensor, device: &B::Device) -> Result<Tensor<B, D>> {
    ensure!(t.shape.len() == D, "expected a {D}-D tensor, got shape {:?}", t.shape);
    Ok(Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device))
}

/// Moves a host tensor to the device: on the CPU backend its buffer becomes the tensor's, without a copy.
pub fn host_into_tensor<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Result<Tensor<B, D>> {
    ensure!(t.shape.len() == D, "expected a {D}-D tensor, got shape {:?}", t.shape);
    Ok(Tensor::from_data(TensorData::new(t.data, t.shape), device))
}

/// Copies a host tensor to the device in `dtype` (rounded to it when narrower than f32).
fn host_to_tensor_as<B: Backend, const D: usize>(
    t: &HostTensor,
    device: &B::Device,
    dtype: DType,
) -> Result<Tensor<B, D>> {
    ensure!(t.shape.len() == D, "expected a {D}-D tensor, got shape {:?}", t.shape);
    Ok(Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), (device, dtype)))
}

/// Copies a device tensor back to the host.
pub fn tensor_to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::format_err!("reading tensor back: {e:?}"))?;
    HostTensor::new(shape, data)
}

impl<B: Backend> Llama<B> {
    /// Loads an HF model directory onto `device` in f32, one layer's tensors on the host at a time
    /// ([`Self::load_in`]).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::load_in(dir, device, WeightDtype::F32)
    }

    /// Loads an HF model directory onto `device` one layer at a time (one layer's f32 copy on the
    /// host at once), keeping the projections' and the lm_head's weights in `dtype`: f32, or the
    /// half precision a model is stored in, widened to f32 inside each product (the CPU backend
    /// does it in its kernels; others cast per call). Embedding, norms and biases stay f32, and so
    /// does every activation. For inference: training and the Taylor scorer need f32 weights.
    pub fn load_in(dir: &Path, device: &B::Device, dtype: WeightDtype) -> Result<Self> {
        let cfg = ModelConfig::load(dir)?;
        let src = WeightSource::open(dir)?;
        src.check_against(&cfg).with_context(|| format!("loading model from {}", dir.display()))?;
        let mut m = Self::empty(cfg.clone(), device)?;
        m.matmul_dtype = match dtype {
            WeightDtype::F32 => DType::F32,
            WeightDtype::F16 => DType::F16,
            WeightDtype::Bf16 => DType::BF16,
        };
        m.load_embedding(src.read_global(&cfg, Global::Embedding)?)?;
        for l in 0..cfg.num_layers() {
            m.load_layer(l, &src.read_layer(&cfg, l)?)?;
        }
        m.load_output(&src.read_global(&cfg, Global::FinalNorm)?, &src.read_global(&cfg, Global::output(&cfg))?)?;
        Ok(m)
    }

    /// Builds the model from a config and its weights, checking every shape first.
    pub fn from_weights(cfg: ModelConfig, w: &Weights, device: &B::Device) -> Result<Self> {
        w.check_against(&cfg)?;
        let layers = (0..cfg.num_layers())
            .map(|i| Layer::load(&cfg, i, w, device, DType::F32).map(Some))
            .collect::<Result<Vec<_>>>()?;
        let embed = host_to_tensor(w.get(Global::Embedding.hf_name())?, device)?;
        Ok(Self {
            embed: Some(embed),
            lm_head: Some(Linear::load(w, Global::output(&cfg).module(), false, device, DType::F32)?),
            norm: Some(host_to_tensor(w.get(Global::FinalNorm.hf_name())?, device)?),
            norm_kind: NormKind::of(&cfg),
            activation: Activation::of(&cfg)?,
            layers,
            cfg,
            matmul_dtype: DType::F32,
            rope: RopeMemo::default(),
            device: device.clone(),
        })
    }

    /// A model with the config `cfg` and no weights loaded (see the type's docs).
    pub fn empty(cfg: ModelConfig, device: &B::Device) -> Result<Self> {
        Ok(Self {
            embed: None,
            lm_head: None,
            norm: None,
            norm_kind: NormKind::of(&cfg),
            activation: Activation::of(&cfg)?,
            layers: (0..cfg.num_layers()).map(|_| None).collect(),
            cfg,
            matmul_dtype: DType::F32,
            rope: RopeMemo::default(),
            device: device.clone(),
        })
    }

    /// Loads the token embedding (`[vocab, d]`), the input of layer 0.
    pub fn load_embedding(&mut self, t: HostTensor) -> Result<()> {
        let want = [self.cfg.vocab_size, self.cfg.hidden_size];
        ensure!(t.shape == want, "the embedding has shape {:?}, expected {want:?}", t.shape);
        self.embed = Some(host_into_tensor(t, &self.device)?);
        Ok(())
    }

    /// Frees the token embedding.
    pub fn unload_embedding(&mut self) {
        self.embed = None;
    }

    /// Loads the final norm (`[d]`) and the output projection (`[vocab, d]`: the lm_head, or the
    /// embedding when the config ties them).
    pub fn load_output(&mut self, norm: &HostTensor, output: &HostTensor) -> Result<()> {
        let (d, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        ensure!(norm.shape == [d], "the final norm has shape {:?}, expected [{d}]", norm.shape);
        ensure!(output.shape == [v, d], "the output projection has shape {:?}, expected [{v}, {d}]", output.shape);
        self.norm = Some(host_to_tensor(norm, &self.device)?);
        self.lm_head = Some(Linear::new(output, None, &self.device, self.matmul_dtype)?);
        Ok(())
    }

    /// Loads layer `l` from `w` (which needs to hold that layer's tensors only), with the shape
    /// the model's config gives it.
    pub fn load_layer(&mut self, l: usize, w: &Weights) -> Result<()> {
        let shape = self.cfg.layers.get(l).with_context(|| format!("layer {l} out of range"))?.clone();
        self.replace_layer(l, shape, w)
    }

    /// Frees layer `l`'s weights.
    pub fn unload_layer(&mut self, l: usize) {
        if let Some(slot) = self.layers.get_mut(l) {
            *slot = None;
        }
    }

    /// Whether layer `l`'s weights are loaded.
    pub fn is_layer_loaded(&self, l: usize) -> bool {
        self.layers.get(l).is_some_and(Option::is_some)
    }

    fn layer(&self, l: usize) -> &Layer<B> {
        self.layers[l].as_ref().unwrap_or_else(|| panic!("layer {l} of this model is not loaded"))
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Token ids as a device tensor.
    ///
    /// # Shapes
    /// ids: `batch·len` values, row-major → `[batch, len]`
    pub fn ids_tensor(&self, ids: &[u32], batch: usize, len: usize) -> Result<Tensor<B, 2, Int>> {
        ensure!(ids.len() == batch * len, "{} ids for a {batch}×{len} batch", ids.len());
        let v = self.cfg.vocab_size as u32;
        ensure!(ids.iter().all(|&i| i < v), "token id out of range for vocabulary of {v}");
        let data: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        Ok(Tensor::from_data(TensorData::new(data, [batch, len]), &self.device))
    }

    /// Logits of every position.
    ///
    /// # Shapes
    /// ids: `[batch, len]` → `[batch, len, vocab]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let mut x = self.embed(ids);
        for l in 0..self.layers.len() {
            x = self.layer_forward(l, x, TapSet::NONE).0;
        }
        self.logits(x)
    }

    /// Token embeddings: the input of layer 0.
    ///
    /// # Shapes
    /// ids: `[batch, len]` → `[batch, len, d]`
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let flat = ids.reshape([b * t]);
        let embed = self.embed.as_ref().expect("the embedding of this model is not loaded");
        embed.clone().select(0, flat).reshape([b, t, self.cfg.hidden_size])
    }

    /// Final norm and lm_head.
    ///
    /// # Shapes
    /// x: `[batch, len, d]` → `[batch, len, vocab]`
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let (norm, lm_head) = match (&self.norm, &self.lm_head) {
            (Some(n), Some(h)) => (n, h),
            _ => panic!("the final norm and lm_head of this model are not loaded"),
        };
        let h = self.apply_norm(x.reshape([b * t, d]), norm);
        lm_head.forward(h).reshape([b, t, self.cfg.vocab_size])
    }

    /// The final norm alone (the first half of [`Llama::logits`]).
    ///
    /// # Shapes
    /// x: `[batch, len, d]` → `[batch·len, d]`
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, t, d] = x.dims();
        let norm = self.norm.as_ref().expect("the final norm of this model is not loaded");
        self.apply_norm(x.reshape([b * t, d]), norm)
    }

    /// The lm_head alone (the second half of [`Llama::logits`]).
    ///
    /// # Shapes
    /// u: `[n, d]` → `[n, vocab]`
    pub fn head(&self, u: Tensor<B, 2>) -> Tensor<B, 2> {
        self.lm_head.as_ref().expect("the lm_head of this model is not loaded").forward(u)
    }

    /// The lm_head's weight, stored transposed: `[d, vocab]` (a model with f32 weights: see
    /// [`Llama::load_in`]).
    pub fn head_weight_t(&self) -> &Tensor<B, 2> {
        let head = self.lm_head.as_ref().expect("the lm_head of this model is not loaded");
        assert!(!head.stored, "the lm_head is kept in half precision, as stored: only inference reads it");
        &head.wt
    }

    /// Replaces layer `l` by the one `w` holds (the layer-`l` names of `layout`) with `shape`
    /// (used by the sequential pruning pass after each layer's surgery). The old layer is freed
    /// first, so the two are never held together (a LLaMA-7B layer is 809 MB in f32); on an error
    /// layer `l` is left unloaded.
    pub fn replace_layer(&mut self, l: usize, shape: LayerShape, w: &Weights) -> Result<()> {
        ensure!(l < self.layers.len(), "layer {l} out of range ({} layers)", self.layers.len());
        self.layers[l] = None;
        let mut cfg = self.cfg.clone();
        cfg.layers[l] = shape;
        let layer =
            Layer::load(&cfg, l, w, &self.device, self.matmul_dtype).with_context(|| format!("replacing layer {l}"))?;
        self.layers[l] = Some(layer);
        self.cfg = cfg;
        Ok(())
    }

    /// Replaces layer `l`'s attention (its input norm, q/k/v and o) by the one `w` holds, with
    /// `shape`, keeping the loaded MLP: sequential calibration runs the pruned attention into the
    /// dense MLP, and `w` need not hold the MLP's weights meanwhile. `shape` must give the loaded
    /// MLP's width. The old attention is freed first; on an error layer `l` is left unloaded.
    pub fn replace_attention(&mut self, l: usize, shape: LayerShape, w: &Weights) -> Result<()> {
        let old = self.layers.get_mut(l).and_then(Option::take).with_context(|| format!("layer {l} is not loaded"))?;
        ensure!(
            shape.intermediate_size == old.shape.intermediate_size,
            "replacing layer {l}'s attention: the new shape's MLP ({} channels) is not the loaded one's ({})",
            shape.intermediate_size,
            old.shape.intermediate_size
        );
        ensure!(
            shape.down_proj_bias == old.shape.down_proj_bias,
            "replacing layer {l}'s attention: the new shape's down_proj bias ({}) is not the loaded one's ({})",
            shape.down_proj_bias,
            old.shape.down_proj_bias
        );
        // The old attention's tensors are dropped at the end of this block.
        let (post_norm, gate_up, down) = {
            let Layer { post_norm, gate_up, down, .. } = old;
            (post_norm, gate_up, down)
        };
        let mut cfg = self.cfg.clone();
        cfg.layers[l] = shape;
        let (input_norm, qkv, o, kv_index) = Layer::load_attention(&cfg, l, w, &self.device, self.matmul_dtype)
            .with_context(|| format!("replacing layer {l}'s attention"))?;
        let shape = cfg.layers[l].clone();
        self.layers[l] = Some(Layer { shape, input_norm, post_norm, qkv, o, gate_up, down, kv_index, lora: None });
        self.cfg = cfg;
        Ok(())
    }

    /// Attaches LoRA adapters to layer `l` (`None` removes them). Replacing or reloading the
    /// layer removes them too.
    pub fn set_lora(&mut self, l: usize, lora: Option<LayerLora<B>>) {
        let y = self.layers[l].as_mut().unwrap_or_else(|| panic!("layer {l} of this model is not loaded"));
        y.lora = lora;
    }

    /// Layer `l`'s adapters, if it has any.
    pub fn lora(&self, l: usize) -> Option<&LayerLora<B>> {
        self.layer(l).lora.as_ref()
    }

    /// Layer `l`'s adapters, mutably (to swap their tensors or set dropout masks).
    pub fn lora_mut(&mut self, l: usize) -> Option<&mut LayerLora<B>> {
        self.layers[l].as_mut().unwrap_or_else(|| panic!("layer {l} of this model is not loaded")).lora.as_mut()
    }

    /// Layer `l`'s four weight matrices, stored transposed (`[in, out]`): q/k/v stacked,
    /// o_proj, gate/up stacked, down_proj (used by the gradient pass).
    pub(crate) fn layer_weights(&self, l: usize) -> [&Tensor<B, 2>; 4] {
        let y = self.layer(l);
        assert!(!y.qkv.stored, "layer {l} is kept in half precision, as stored: only inference reads it");
        [&y.qkv.wt, &y.o.wt, &y.gate_up.wt, &y.down.wt]
    }

    /// Mutable [`Llama::layer_weights`].
    pub(crate) fn layer_weights_mut(&mut self, l: usize) -> [&mut Tensor<B, 2>; 4] {
        let y = self.layers[l].as_mut().unwrap_or_else(|| panic!("layer {l} of this model is not loaded"));
        assert!(!y.qkv.stored, "layer {l} is kept in half precision, as stored: only inference reads it");
        [&mut y.qkv.wt, &mut y.o.wt, &mut y.gate_up.wt, &mut y.down.wt]
    }

    /// The dtypes of layer `l`'s four weight matrices and of the lm_head's, as kept.
    #[cfg(test)]
    pub(crate) fn kept_dtypes(&self, l: usize) -> Vec<DType> {
        let y = self.layer(l);
        let head = self.lm_head.as_ref().map(|h| h.wt.dtype());
        [&y.qkv, &y.o, &y.gate_up, &y.down].iter().map(|lin| lin.wt.dtype()).chain(head).collect()
    }

    /// Runs decoder layer `l`, returning its output and the requested taps.
    ///
    /// # Shapes
    /// x: `[batch, len, d]` → `[batch, len, d]`
    pub fn layer_forward(&self, l: usize, x: Tensor<B, 3>, taps: TapSet) -> (Tensor<B, 3>, LayerTaps<B>) {
        let mut out = LayerTaps::empty();
        let h = self.attn_block(l, x, taps, &mut out);
        let y = self.mlp_block(l, h, taps, &mut out);
        (y, out)
    }

    /// The attention half of layer `l` with its residual: `x + attn(norm(x))`.
    ///
    /// # Shapes
    /// x: `[batch, len, d]` → `[batch, len, d]`
    pub fn attn_block(&self, l: usize, x: Tensor<B, 3>, taps: TapSet, out: &mut LayerTaps<B>) -> Tensor<B, 3> {
        self.attention(l, x, taps, out, None, false)
    }

    /// Attention of layer `l`; with a cache, the new positions follow the cached ones and
    /// their keys and values are appended to it.
    ///
    /// With `last_only`, the attention and o_proj are those of each sequence's last query alone and so is the
    /// result (`[batch, 1, d]`); keys and values are still computed for every position.
    fn attention(
        &self,
        l: usize,
        x: Tensor<B, 3>,
        taps: TapSet,
        out: &mut LayerTaps<B>,
        cache: Option<&mut LayerKv<B>>,
        last_only: bool,
    ) -> Tensor<B, 3> {
        let layer = self.layer(l);
        let [b, t, d] = x.dims();
        let dh = self.cfg.head_dim;
        let x2 = x.reshape([b * t, d]); // [N, d]
        let a = self.apply_norm(x2.clone(), &layer.input_norm);
        if taps.attn_in {
            out.attn_in = Some(a.clone());
        }
        let start = cache.as_ref().map_or(0, |c| c.len());
        let rope = self.rope.get(start, t, dh, self.cfg.rope_theta, &self.device);
        let (qw, kw) = (layer.shape.num_heads * dh, layer.shape.num_kv_heads * dh);
        let lora = layer.lora.as_ref();
        let qkv = adapted(&layer.qkv, lora, &[Proj::Q, Proj::K, Proj::V], &[qw, kw, kw], a); // [N, qw + 2·kw]
        let n = b * t;
        let (q, x2, tq) = if last_only {
            let last = |m: Tensor<B, 2>, w: usize| m.reshape([b, t, w]).slice([0..b, t - 1..t, 0..w]).reshape([b, w]);
            let rope_last = RopeTables::<B>::new(start + t - 1, 1, dh, self.cfg.rope_theta, &self.device);
            (kernels::rope_columns(&last(qkv.clone(), qw + 2 * kw), 0..qw, &rope_last), last(x2, d), 1)
        } else {
            (kernels::rope_columns(&qkv, 0..qw, &rope), x2, t)
        };
        let k = kernels::rope_columns(&qkv, qw..qw + kw, &rope);
        let v = qkv.slice([0..n, qw + kw..qw + 2 * kw]);
        let (k, v, kv_len) = match cache {
            None => (k, v, t),
            Some(c) => c.append(k.reshape([b, t, kw]), v.reshape([b, t, kw])),
        };
        let dims = AttnDims { batch: b, q_len: tq, kv_len, head_dim: dh };
        let z = kernels::attention(q, k, v, &layer.shape.kv_head_of, &layer.kv_index, dims); // [N, hq·dh]
        if taps.attn_heads {
            out.attn_heads = Some(z.clone());
        }
        (x2 + adapted(&layer.o, lora, &[Proj::O], &[d], z)).reshape([b, tq, d])
    }

    /// An empty KV cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> KvCache<B> {
        KvCache::new(batch, self.layers.len())
    }

    /// Logits of `ids`, which continue the sequences whose keys and values `cache` holds
    /// (empty for a prompt); the new keys and values are appended to the cache. Feeding a
    /// prompt and then one token at a time gives the logits of [`Llama::forward`] over the
    /// whole sequence (tested).
    ///
    /// # Shapes
    /// ids: `[batch, new]` → `[batch, new, vocab]`
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        Ok(self.logits(self.hidden_cached(ids, cache)?))
    }

    /// [`Llama::forward_cached`] without the final norm and lm_head: the last layer's output,
    /// for callers that need the logits of a few positions only (pass a slice to [`Llama::logits`]).
    ///
    /// # Shapes
    /// ids: `[batch, new]` → `[batch, new, d]`
    pub fn hidden_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        self.hidden_cached_of(ids, cache, false)
    }

    /// [`Llama::hidden_cached`] of each sequence's last position alone, for a caller that wants only its
    /// logits (a prompt before generation): the last layer runs attention, o_proj and the MLP for that position
    /// only (its fused q/k/v product still runs on every position), as llama.cpp does with the positions whose
    /// outputs are not wanted; on SmolLM2-135M that saves 2.8 % of a prompt's products. Every layer's keys and
    /// values still go to the cache, so generation continues from it as after [`Llama::hidden_cached`] (tested).
    ///
    /// # Shapes
    /// ids: `[batch, new]` → `[batch, 1, d]`
    pub fn last_hidden_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Result<Tensor<B, 3>> {
        self.hidden_cached_of(ids, cache, true)
    }

    fn hidden_cached_of(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
        last_only: bool,
    ) -> Result<Tensor<B, 3>> {
        let [b, t] = ids.dims();
        ensure!(t > 0 || !last_only, "no position to take the last of");
        ensure!(b == cache.batch(), "a cache for {} sequences was given {b}", cache.batch());
        ensure!(
            cache.layers_mut().len() == self.layers.len(),
            "the cache has {} layers, the model {}",
            cache.layers_mut().len(),
            self.layers.len()
        );
        let mut x = self.embed(ids);
        let layers = cache.layers_mut().len();
        for (l, c) in cache.layers_mut().iter_mut().enumerate() {
            x = self.layer_cached_of(l, x, c, last_only && l + 1 == layers)?;
        }
        Ok(x)
    }

    /// Decoder layer `l` alone over new positions that follow those whose keys and values `cache`
    /// holds for this layer (empty for a prompt); the new keys and values are appended. Running
    /// every layer in turn, each with its own cache, is [`Llama::hidden_cached`] after the
    /// embedding, operation for operation: so a pass can hold one layer's weights at a time
    /// (`slim_eval::zeroshot::score_tasks_streamed`).
    ///
    /// # Shapes
    /// x: `[batch, new, d]` → `[batch, new, d]`
    pub fn layer_cached(&self, l: usize, x: Tensor<B, 3>, cache: &mut LayerKv<B>) -> Result<Tensor<B, 3>> {
        self.layer_cached_of(l, x, cache, false)
    }

    /// [`Llama::layer_cached`], of each sequence's last position alone with `last_only` (`[batch, 1, d]`).
    fn layer_cached_of(
        &self,
        l: usize,
        x: Tensor<B, 3>,
        cache: &mut LayerKv<B>,
        last_only: bool,
    ) -> Result<Tensor<B, 3>> {
        let [b, _, _] = x.dims();
        ensure!(b == cache.batch(), "layer {l}: a cache for {} sequences was given {b}", cache.batch());
        let mut taps = LayerTaps::empty();
        let h = self.attention(l, x, TapSet::NONE, &mut taps, Some(cache), last_only);
        Ok(self.mlp_block(l, h, TapSet::NONE, &mut taps))
    }

    /// The MLP half of layer `l` with its residual: `h + mlp(norm(h))`.
    ///
    /// # Shapes
    /// h: `[batch, len, d]` → `[batch, len, d]`
    pub fn mlp_block(&self, l: usize, h: Tensor<B, 3>, taps: TapSet, out: &mut LayerTaps<B>) -> Tensor<B, 3> {
        let layer = self.layer(l);
        let [b, t, d] = h.dims();
        let h = h.reshape([b * t, d]);
        let u = self.apply_norm(h.clone(), &layer.post_norm);
        if taps.mlp_in {
            out.mlp_in = Some(u.clone());
        }
        let f = layer.shape.intermediate_size;
        let lora = layer.lora.as_ref();
        let g = self.apply_activation(adapted(&layer.gate_up, lora, &[Proj::Gate, Proj::Up], &[f, f], u));
        if taps.mlp_act {
            out.mlp_act = Some(g.clone());
        }
        let y = adapted(&layer.down, lora, &[Proj::Down], &[d], g);
        if taps.mlp_out {
            out.mlp_out = Some(y.clone());
        }
        (h + y).reshape([b, t, d])
    }

    /// The config's norm with weight `w`.
    ///
    /// # Shapes
    /// x: `[n, d]`, w: `[d]` → `[n, d]`
    fn apply_norm(&self, x: Tensor<B, 2>, w: &Tensor<B, 1>) -> Tensor<B, 2> {
        match self.norm_kind {
            NormKind::RmsNorm { eps } => kernels::rms_norm(x, w, eps),
        }
    }

    /// The config's MLP activation, from the fused gate/up projection.
    ///
    /// # Shapes
    /// gate_up: `[n, 2f]` (gate columns, then up columns) → `[n, f]`
    fn apply_activation(&self, gate_up: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.activation {
            Activation::SiluGlu => kernels::silu_mul(gate_up),
        }
    }
}
