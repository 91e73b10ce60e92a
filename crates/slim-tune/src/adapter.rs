//! LoRA adapters on the host: their initialisation, PEFT's on-disk format, and merging them
//! into a model's weights.
//!
//! Tensors are held as the runtime uses them (`Aᵀ`, `[in, r]`, and `Bᵀ`, `[r, out]`;
//! [`slim_model::LoraWeights`]) and turned into PEFT's `lora_A.weight` (`[r, in]`) and
//! `lora_B.weight` (`[out, r]`) only on disk.

use anyhow::{bail, ensure, Context, Result};
use burn_autodiff::grads::Gradients;
use serde::{Deserialize, Serialize};
use slim_checkpoint::layout::Proj;
use slim_checkpoint::synthetic::SplitMix;
use slim_checkpoint::{HostTensor, ModelConfig};
use slim_model::burn_tensor::{backend::Backend, Tensor, TensorData};
use slim_model::{LayerLora, LoraWeights};
use std::collections::BTreeMap;
use std::path::Path;

/// The adapter file inside an adapter folder (PEFT's name).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The adapter's settings inside an adapter folder (PEFT's name).
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// What an adapter is: rank, scale, dropout and which projections it adapts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// Rank `r` (at least 1).
    pub rank: usize,
    /// `α`; the update is scaled by `α / r`.
    pub alpha: f64,
    /// Dropout probability of the adapters' input while training, in `[0, 1)`.
    pub dropout: f64,
    /// The adapted projections, in [`Proj::ALL`] order.
    pub targets: Vec<Proj>,
}

impl LoraSpec {
    /// The paper's script (spec §5): r 4, α 16, dropout 0.05, all seven projections.
    pub fn paper() -> Self {
        Self { rank: 4, alpha: 16.0, dropout: 0.05, targets: Proj::ALL.to_vec() }
    }

    /// `α / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks the settings, naming the option at fault.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.rank >= 1, "--rank must be at least 1, got {}", self.rank);
        ensure!(self.alpha.is_finite() && self.alpha > 0.0, "--alpha must be a positive number, got {}", self.alpha);
        ensure!(
            self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout),
            "--lora-dropout must be in [0, 1), got {}",
            self.dropout
        );
        ensure!(!self.targets.is_empty(), "--targets names no projection");
        Ok(())
    }
}

/// The short module name PEFT's `target_modules` uses (`q_proj`, ..., `down_proj`).
pub fn target_name(p: Proj) -> String {
    let module = p.module(0);
    module.rsplit('.').next().unwrap_or(&module).to_string()
}

/// A projection from its short module name.
pub fn parse_target(s: &str) -> Result<Proj> {
    Proj::ALL.into_iter().find(|&p| target_name(p) == s).with_context(|| {
        let names: Vec<String> = Proj::ALL.into_iter().map(target_name).collect();
        format!("`{s}` is not a projection (expected one of {})", names.join(", "))
    })
}

/// One projection's adapter on the host, in the runtime's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjAdapter {
    /// `Aᵀ`, `[in, r]`.
    pub a_t: HostTensor,
    /// `Bᵀ`, `[r, out]`.
    pub b_t: HostTensor,
}

/// The adapters of every layer of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// Rank, scale, dropout and targets.
    pub spec: LoraSpec,
    /// Per layer, per projection in [`Proj::ALL`] order.
    pub layers: Vec<[Option<ProjAdapter>; 7]>,
}

fn slot(p: Proj) -> usize {
    Proj::ALL.iter().position(|&q| q == p).expect("a projection of Proj::ALL")
}

impl Adapter {
    /// PEFT's default initialisation: `A` Kaiming-uniform with `a = √5` (uniform in
    /// `±1/√in`), `B` zero, so the adapted model starts equal to the base model. Seeded.
    pub fn init(cfg: &ModelConfig, spec: &LoraSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        let mut rng = SplitMix(seed ^ 0x4C6F_5241); // "LoRA"
        let r = spec.rank;
        let layers = (0..cfg.num_layers())
            .map(|l| {
                let mut out: [Option<ProjAdapter>; 7] = Default::default();
                for &p in &spec.targets {
                    let [o, i] = p.dims(cfg, l).expect("layer of the config");
                    let bound = 1.0 / (i as f32).sqrt();
                    let a_t = (0..i * r).map(|_| rng.uniform() * bound).collect();
                    out[slot(p)] = Some(ProjAdapter {
                        a_t: HostTensor::new(vec![i, r], a_t)?,
                        b_t: HostTensor::new(vec![r, o], vec![0.0; r * o])?,
                    });
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { spec: spec.clone(), layers })
    }

    /// Every adapter tensor with its PEFT name, in a fixed order (layer, projection, A then B).
    pub fn tensors(&self) -> Vec<(String, &HostTensor)> {
        let mut v = Vec::new();
        for (l, projs) in self.layers.iter().enumerate() {
            for (p, pa) in Proj::ALL.iter().zip(projs) {
                if let Some(pa) = pa {
                    v.push((peft_name(*p, l, 'A'), &pa.a_t));
                    v.push((peft_name(*p, l, 'B'), &pa.b_t));
                }
            }
        }
        v
    }

    /// Mutable [`Adapter::tensors`] without names, same order.
    pub fn tensors_mut(&mut self) -> Vec<&mut HostTensor> {
        let mut v = Vec::new();
        for pa in self.layers.iter_mut().flat_map(|projs| projs.iter_mut().flatten()) {
            v.push(&mut pa.a_t);
            v.push(&mut pa.b_t);
        }
        v
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.tensors().iter().map(|(_, t)| t.data.len()).sum()
    }

    /// Layer `l`'s adapters as device tensors for the runtime (no dropout).
    pub fn layer_on<B: Backend>(&self, l: usize, device: &B::Device) -> LayerLora<B> {
        let up = |t: &HostTensor| Tensor::<B, 2>::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device);
        let weights = self.layers[l]
            .each_ref()
            .map(|pa| pa.as_ref().map(|pa| LoraWeights { a_t: up(&pa.a_t), b_t: up(&pa.b_t) }));
        LayerLora::new(self.spec.scale(), weights)
    }

    /// Writes the adapter folder PEFT loads: `adapter_config.json` and
    /// `adapter_model.safetensors` (f32), each written under a temporary name first.
    pub fn save_peft(&self, dir: &Path, base_model: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut views = Vec::new();
        for (name, t) in self.tensors() {
            // PEFT's layout: A is [r, in], B is [out, r]: the transposes of ours.
            let t = t.transpose2()?;
            let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            views.push((name, t.shape, bytes));
        }
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = views
            .iter()
            .map(|(n, s, b)| {
                Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?))
            })
            .collect::<Result<_>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(tensors, Some(meta))?;
        slim_fs::write_atomic(&dir.join(ADAPTER_WEIGHTS), &bytes)?;
        let cfg = PeftConfig::of(&self.spec, base_model);
        slim_fs::write_atomic(&dir.join(ADAPTER_CONFIG), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
        Ok(())
    }

    /// Reads an adapter folder in PEFT's format for a model with config `cfg`, checking every
    /// tensor's name and shape.
    pub fn load_peft(dir: &Path, cfg: &ModelConfig) -> Result<Self> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
        let pc: PeftConfig = serde_json::from_str(&text).with_context(|| format!("parsing {}", cfg_path.display()))?;
        ensure!(pc.peft_type == "LORA", "{}: peft_type is {}, not LORA", cfg_path.display(), pc.peft_type);
        let mut targets: Vec<Proj> = pc.target_modules.iter().map(|s| parse_target(s)).collect::<Result<_>>()?;
        targets.sort_by_key(|&p| slot(p));
        let spec = LoraSpec { rank: pc.r, alpha: pc.lora_alpha, dropout: pc.lora_dropout, targets };
        spec.validate().with_context(|| format!("in {}", cfg_path.display()))?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        let mut adapter = Self::init(cfg, &spec, 0)?;
        let mut seen = 0;
        for (l, projs) in adapter.layers.iter_mut().enumerate() {
            for (p, pa) in Proj::ALL.iter().zip(projs.iter_mut()) {
                let Some(pa) = pa else { continue };
                for (which, t) in [('A', &mut pa.a_t), ('B', &mut pa.b_t)] {
                    let name = peft_name(*p, l, which);
                    let view = st.tensor(&name).with_context(|| format!("{}: no tensor `{name}`", path.display()))?;
                    let want = [t.shape[1], t.shape[0]];
                    ensure!(
                        view.shape() == want,
                        "{}: `{name}` has shape {:?}, the model needs {want:?}",
                        path.display(),
                        view.shape()
                    );
                    let host =
                        slim_checkpoint::weights::to_host(&name, view.dtype(), want.to_vec(), view.data(), &path)?;
                    *t = host.transpose2()?;
                    seen += 1;
                }
            }
        }
        let extra = st.names().len() - seen;
        if extra != 0 {
            bail!("{}: {extra} tensors that are not LoRA weights of this model's {:?}", path.display(), spec.targets);
        }
        Ok(adapter)
    }

    /// `W + (α/r)·B·A` for every adapted projection of `w`'s layer `l` tensors, in place
    /// (`w` holds HF tensors by name, `[out, in]`), computed on `device`.
    pub fn merge_layer<B: Backend>(
        &self,
        l: usize,
        w: &mut slim_checkpoint::Weights,
        device: &B::Device,
    ) -> Result<()> {
        for p in Proj::ALL {
            let name = p.weight(l);
            if let Some(merged) = self.merged::<B>(&name, w.get(&name)?, device)? {
                w.insert(name, merged);
            }
        }
        Ok(())
    }

    /// The tensor `name` (HF name, `[out, in]`) with its adapter merged in, `W + (α/r)·B·A`,
    /// computed on `device`; `None` when no adapter acts on it.
    pub fn merged<B: Backend>(&self, name: &str, base: &HostTensor, device: &B::Device) -> Result<Option<HostTensor>> {
        let Some(pa) = self.layers.iter().enumerate().find_map(|(l, projs)| {
            Proj::ALL.iter().zip(projs).find(|(p, _)| p.weight(l) == name).and_then(|(_, pa)| pa.as_ref())
        }) else {
            return Ok(None);
        };
        let up = |t: &HostTensor| Tensor::<B, 2>::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device);
        let want = [pa.b_t.shape[1], pa.a_t.shape[0]];
        ensure!(base.shape == want, "`{name}` has shape {:?}, its adapter is for {want:?}", base.shape);
        // (Aᵀ·Bᵀ)ᵀ = B·A, `[out, in]`.
        let delta = up(&pa.a_t).matmul(up(&pa.b_t)).transpose().mul_scalar(self.spec.scale());
        Ok(Some(slim_model::tensor_to_host::<B, 2>(up(base) + delta)?))
    }
}

/// PEFT's name of a LoRA tensor (`which` is `A` or `B`).
pub fn peft_name(p: Proj, layer: usize, which: char) -> String {
    format!("base_model.model.{}.lora_{which}.weight", p.module(layer))
}

/// The fields of PEFT's `adapter_config.json` that a LoRA adapter needs.
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    task_type: String,
    r: usize,
    lora_alpha: f64,
    lora_dropout: f64,
    target_modules: Vec<String>,
    #[serde(default = "none")]
    bias: String,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

fn none() -> String {
    "none".into()
}

impl PeftConfig {
    fn of(spec: &LoraSpec, base_model: Option<&str>) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: spec.rank,
            lora_alpha: spec.alpha,
            lora_dropout: spec.dropout,
            target_modules: spec.targets.iter().map(|&p| target_name(p)).collect(),
            bias: none(),
            fan_in_fan_out: false,
            inference_mode: true,
            base_model_name_or_path: base_model.map(str::to_string),
            use_rslora: false,
            use_dora: false,
            rest: BTreeMap::new(),
        }
    }
}

/// Reads the gradient of every adapter tensor of layer `l` (in the order of
/// [`Adapter::tensors`] for that layer) out of `grads`.
pub(crate) fn layer_grads<B: Backend>(
    lora: &LayerLora<burn_autodiff::Autodiff<B>>,
    grads: &Gradients,
    l: usize,
) -> Result<Vec<Tensor<B, 2>>> {
    let mut v = Vec::new();
    for lw in lora.weights.iter().flatten() {
        v.push(lw.a_t.grad(grads).with_context(|| format!("layer {l}: no gradient reached a LoRA A"))?);
        v.push(lw.b_t.grad(grads).with_context(|| format!("layer {l}: no gradient reached a LoRA B"))?);
    }
    Ok(v)
}
