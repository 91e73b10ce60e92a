//! The key documents of every stage entry, built in one place so that running the pipeline
//! and explaining it ([`crate::explain_pipeline`]) can never disagree about a key.

use crate::keys::doc;
use crate::{CalibMode, PipelineConfig};
use anyhow::{ensure, Result};
use serde_json::json;
use slim_alloc::{AllocConfig, GlobalConfig, PruneCounts, UniformConfig};
use slim_artifact::schema::GqaMode;
use slim_artifact::{Key, KeyDoc};
use slim_checkpoint::WeightDtype;
use slim_recover::RecoveryKind;
use slim_score::HeadPrune;

/// Format of the `capture-attn` entries' `AttnStats`: 2 added `z_cov`, the covariance of
/// o_proj's input that the `lstsq` recovery of o_proj needs (format 1, with no `format` in
/// its key, cannot be decoded as 2); 3 stores the statistics as the f32 values they are
/// (`slim_artifact::schema::as_f32`: the same values, half the bytes).
const ATTN_STATS_FORMAT: u32 = 3;

/// Format of the `capture-mlp` entries' `MlpStats`: 2 stores the statistics as f32, the values
/// they are (format 1, with no `format` in its key, stored them widened to f64: 969 MB for one
/// LLaMA-7B layer's covariance instead of 485 MB).
const MLP_STATS_FORMAT: u32 = 2;

/// Format of the `surgery` entries' model folder: 2 writes a pruned model's config.json with
/// `model_type` `slimllm` (format 2 of its `slimllm` object) and the transformers code beside the
/// weights (`slim_checkpoint::config::SLIMLLM_CODE_FILES`); format 1, with no `format` in its key,
/// wrote `model_type` llama or qwen2, which transformers cannot load. The weights are the same.
const SURGERY_FORMAT: u32 = 2;

/// Key documents of one pipeline configuration on one model.
pub(crate) struct Graph<'a> {
    pub cfg: &'a PipelineConfig,
    pub model: Key,
    /// [`crate::keys::text_digest`] of the calibration documents; `None` for random ids.
    pub calib_text: Option<String>,
}

/// The key documents of one pruned layer's six entries, in the order a run needs them.
pub(crate) struct LayerDocs {
    pub capture_attn: KeyDoc,
    pub score_attn: KeyDoc,
    pub recover_attn: KeyDoc,
    pub capture_mlp: KeyDoc,
    pub score_mlp: KeyDoc,
    pub recover_mlp: KeyDoc,
}

impl LayerDocs {
    /// The six documents with the run's label of each (`capture`, `score`, `recover`).
    pub fn all(&self) -> [(&'static str, &KeyDoc); 6] {
        [
            ("capture", &self.capture_attn),
            ("score", &self.score_attn),
            ("recover", &self.recover_attn),
            ("capture", &self.capture_mlp),
            ("score", &self.score_mlp),
            ("recover", &self.recover_mlp),
        ]
    }
}

/// Every per-layer key of a run and the surgery entry's, from the keys before them alone (no
/// value is needed: each key hashes the keys of its inputs), so that a run knows what it will
/// compute before it reads a weight.
pub(crate) struct LayerPlanDocs {
    /// `None` for a layer the allocation leaves untouched.
    pub layers: Vec<Option<LayerDocs>>,
    pub surgery: KeyDoc,
}

/// The head-pruning unit a layer's counts ask for.
pub(crate) fn head_prune(counts: &PruneCounts, mode: GqaMode) -> HeadPrune {
    match counts.gqa.unwrap_or(mode) {
        GqaMode::PerGroup => HeadPrune::PerGroup { heads_per_group: counts.heads_per_group },
        GqaMode::WholeGroup => HeadPrune::WholeGroup { groups: counts.groups },
    }
}

impl Graph<'_> {
    pub fn calib(&self) -> Result<KeyDoc> {
        let mut config = serde_json::to_value(&self.cfg.calib)?;
        if let Some(t) = &self.calib_text {
            config["text"] = t.clone().into();
        }
        doc("calib", &config, &[("model", self.model)])
    }

    pub fn importance(&self, calib: Key) -> Result<KeyDoc> {
        doc("importance", &json!({}), &[("model", self.model), ("calib", calib)])
    }

    /// The allocation settings: the paper's defaults for the target, overridden by the config.
    pub fn alloc_config(&self, n_layers: usize) -> Result<AllocConfig> {
        let cfg = self.cfg;
        let mut a = AllocConfig::paper_defaults(cfg.target, n_layers);
        a.num_selected = cfg.pruned_layers.unwrap_or(a.num_selected);
        a.alpha = cfg.alpha.unwrap_or(a.alpha);
        a.gqa = cfg.gqa;
        a.align = cfg.align;
        // The plan always reserves the o_proj/down_proj biases that recovery adds, whatever
        // the recovery, so that changing only the recovery reuses the plan and the scores;
        // with `none` the pruned model ends at most 2·d parameters per pruned layer below
        // the target (0.02 % of SmolLM2-135M). The run reports the exact count either way.
        a.recovery_adds_bias = true;
        ensure!(
            (1..=n_layers).contains(&a.num_selected),
            "--pruned-layers must lie in 1..={n_layers}, got {}",
            a.num_selected
        );
        Ok(a)
    }

    pub fn alloc(&self, alloc: &AllocConfig, importance: Key) -> Result<KeyDoc> {
        doc("alloc", alloc, &[("model", self.model), ("importance", importance)])
    }

    /// LLM-Pruner's uniform allocation; like the cosine one it reserves the recovery biases.
    pub fn uniform_config(&self, n_layers: usize) -> UniformConfig {
        let mut u = UniformConfig::llm_pruner(self.cfg.target, n_layers, self.cfg.gqa);
        u.recovery_adds_bias = true;
        u.align = self.cfg.align;
        u
    }

    pub fn alloc_uniform(&self, u: &UniformConfig) -> Result<KeyDoc> {
        doc("alloc", &json!({"uniform": u}), &[("model", self.model)])
    }

    pub fn global_config(&self) -> GlobalConfig {
        GlobalConfig { align: self.cfg.align, ..GlobalConfig::flap(self.cfg.target, self.cfg.gqa) }
    }

    /// Every layer's unit and channel importance from the dense statistics, for the global
    /// allocation: keyed by what determines the dense captures (model, calibration) and the
    /// scorer's inputs.
    pub fn global_scores(&self, calib: Key, taylor: Option<Key>) -> Result<KeyDoc> {
        let mut inputs = vec![("model", self.model), ("calib", calib)];
        inputs.extend(taylor.map(|k| ("taylor", k)));
        doc("global-scores", &json!({"scorer": self.cfg.scorer, "gqa": self.cfg.gqa}), &inputs)
    }

    pub fn alloc_global(&self, g: &GlobalConfig, scores: Key) -> Result<KeyDoc> {
        doc("alloc", &json!({"global": g}), &[("model", self.model), ("scores", scores)])
    }

    /// The chain key before layer 0: sequential captures of later layers chain over it.
    pub fn chain_start(&self, calib: Key) -> Result<Key> {
        Ok(doc("chain", &json!({"layer": 0}), &[("model", self.model), ("calib", calib)])?.key())
    }

    /// The chain key after layer `l`, from the decisions (recoveries) of that layer.
    pub fn chain_next(&self, l: usize, prev: Key, attn: Key, mlp: Key) -> Result<Key> {
        Ok(doc("chain", &json!({"layer": l + 1}), &[("prev", prev), ("attn", attn), ("mlp", mlp)])?.key())
    }

    fn stats_inputs(&self, chain: Key, calib: Key) -> Vec<(&'static str, Key)> {
        match self.cfg.calib_mode {
            CalibMode::Sequential => vec![("chain", chain)],
            CalibMode::Dense => vec![("model", self.model), ("calib", calib)],
        }
    }

    pub fn capture_attn(&self, l: usize, chain: Key, calib: Key) -> Result<KeyDoc> {
        doc(
            "capture-attn",
            &json!({"layer": l, "mode": self.cfg.calib_mode, "format": ATTN_STATS_FORMAT}),
            &self.stats_inputs(chain, calib),
        )
    }

    /// [`Graph::capture_attn`] of dense calibration, whatever the configured mode.
    pub fn capture_attn_dense(&self, l: usize, calib: Key) -> Result<KeyDoc> {
        doc(
            "capture-attn",
            &json!({"layer": l, "mode": CalibMode::Dense, "format": ATTN_STATS_FORMAT}),
            &[("model", self.model), ("calib", calib)],
        )
    }

    /// [`Graph::capture_mlp`] of dense calibration, whatever the configured mode.
    pub fn capture_mlp_dense(&self, l: usize, calib: Key) -> Result<KeyDoc> {
        doc(
            "capture-mlp",
            &json!({"layer": l, "mode": CalibMode::Dense, "format": MLP_STATS_FORMAT}),
            &[("model", self.model), ("calib", calib)],
        )
    }

    /// The Taylor capture (gradients of the dense model), when the scorer reads it. Like
    /// the layer importance it comes from the dense model in both calibration modes.
    pub fn taylor(&self, calib: Key) -> Result<Option<KeyDoc>> {
        if !self.cfg.scorer.needs_gradients() {
            return Ok(None);
        }
        let config = json!({"loss": "mean next-token cross-entropy", "chunk": slim_capture::TAYLOR_CHUNK});
        Ok(Some(doc("capture-taylor", &config, &[("model", self.model), ("calib", calib)])?))
    }

    /// Inputs of a score entry: its statistics, the model, and the Taylor capture if read.
    fn score_inputs(&self, stats: Key, taylor: Option<Key>) -> Vec<(&'static str, Key)> {
        let mut inputs = vec![("stats", stats), ("model", self.model)];
        inputs.extend(taylor.map(|k| ("taylor", k)));
        inputs
    }

    pub fn score_attn(&self, counts: &PruneCounts, stats: Key, taylor: Option<Key>) -> Result<KeyDoc> {
        doc(
            "score-attn",
            &json!({"scorer": self.cfg.scorer, "prune": head_prune(counts, self.cfg.gqa)}),
            &self.score_inputs(stats, taylor),
        )
    }

    /// The entry holds a `Refit` (format 2; format 1 held an optional affine correction).
    pub fn recover_attn(&self, stats: Key, keep: Key) -> Result<KeyDoc> {
        doc("recover-attn", &self.recovery_config(), &[("stats", stats), ("keep", keep), ("model", self.model)])
    }

    /// The recovery settings a recover entry depends on: the `lstsq` settings only when used.
    fn recovery_config(&self) -> serde_json::Value {
        match self.cfg.recovery {
            RecoveryKind::Lstsq => json!({"recovery": self.cfg.recovery, "lstsq": self.cfg.lstsq, "format": 2}),
            r => json!({"recovery": r, "format": 2}),
        }
    }

    /// In sequential mode the MLP is captured after the layer's attention was pruned, so
    /// its key also depends on the attention's recovery entry.
    pub fn capture_mlp(&self, l: usize, chain: Key, calib: Key, attn: Key) -> Result<KeyDoc> {
        let mut inputs = self.stats_inputs(chain, calib);
        if self.cfg.calib_mode == CalibMode::Sequential {
            inputs.push(("attn", attn));
        }
        doc("capture-mlp", &json!({"layer": l, "mode": self.cfg.calib_mode, "format": MLP_STATS_FORMAT}), &inputs)
    }

    pub fn score_mlp(&self, counts: &PruneCounts, stats: Key, taylor: Option<Key>) -> Result<KeyDoc> {
        doc(
            "score-mlp",
            &json!({"scorer": self.cfg.scorer, "channels": counts.channels, "keep_lowest": self.cfg.keep_lowest}),
            &self.score_inputs(stats, taylor),
        )
    }

    /// The entry holds a `Refit` (format 2; format 1 held an optional affine correction).
    pub fn recover_mlp(&self, stats: Key, keep: Key) -> Result<KeyDoc> {
        doc("recover-mlp", &self.recovery_config(), &[("stats", stats), ("keep", keep), ("model", self.model)])
    }

    /// The documents of every layer under `counts` (the allocation's) and of the surgery entry.
    pub fn layer_docs(
        &self,
        counts: &[PruneCounts],
        calib: Key,
        taylor: Option<Key>,
        alloc: Key,
        dtype: WeightDtype,
    ) -> Result<LayerPlanDocs> {
        let mut chain = self.chain_start(calib)?;
        let mut layers = Vec::with_capacity(counts.len());
        for (l, c) in counts.iter().enumerate() {
            if c.heads == 0 && c.channels == 0 {
                layers.push(None);
                continue;
            }
            let capture_attn = self.capture_attn(l, chain, calib)?;
            let score_attn = self.score_attn(c, capture_attn.key(), taylor)?;
            let recover_attn = self.recover_attn(capture_attn.key(), score_attn.key())?;
            let capture_mlp = self.capture_mlp(l, chain, calib, recover_attn.key())?;
            let score_mlp = self.score_mlp(c, capture_mlp.key(), taylor)?;
            let recover_mlp = self.recover_mlp(capture_mlp.key(), score_mlp.key())?;
            chain = self.chain_next(l, chain, recover_attn.key(), recover_mlp.key())?;
            layers.push(Some(LayerDocs {
                capture_attn,
                score_attn,
                recover_attn,
                capture_mlp,
                score_mlp,
                recover_mlp,
            }));
        }
        let surgery = self.surgery(counts.len(), chain, alloc, dtype)?;
        Ok(LayerPlanDocs { layers, surgery })
    }

    /// The pruned model is stored in the dense model's `dtype`; f32, which every model stored
    /// before this choice was written in, keeps the key it had.
    pub fn surgery(&self, n_layers: usize, decisions: Key, alloc: Key, dtype: WeightDtype) -> Result<KeyDoc> {
        let mut config = json!({"layers": n_layers, "format": SURGERY_FORMAT});
        if dtype != WeightDtype::F32 {
            config["dtype"] = serde_json::to_value(dtype)?;
        }
        doc("surgery", &config, &[("model", self.model), ("decisions", decisions), ("alloc", alloc)])
    }
}

/// Key document of a perplexity entry; `text` is the text's digest (absent from entries
/// made before texts were hashed into keys).
pub(crate) fn eval_doc(
    model: Key,
    data: slim_data::EvalText,
    text: Option<&str>,
    seq_len: usize,
    windows: Option<usize>,
) -> Result<KeyDoc> {
    let mut config = json!({"data": data.name(), "seq_len": seq_len, "windows": windows});
    if let Some(t) = text {
        config["text"] = t.into();
    }
    doc("eval", &config, &[("model", model)])
}
