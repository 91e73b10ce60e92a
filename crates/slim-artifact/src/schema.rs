//! Plain-data schema of every artifact. All statistics are population statistics
//! (divided by the number of tokens `n`), in f64, row-major.
//!
//! The capture statistics ([`AttnStats`], [`MlpStats`]) are computed in f32 on the device and
//! widened to f64; they are stored as the f32 values they are ([`as_f32`]), which is lossless and
//! halves the largest entries of the cache (a LLaMA-7B layer's `g_cov`, 11,008² values, is 485 MB
//! instead of 969 MB).

use serde::{Deserialize, Serialize};

/// How attention heads are grouped under grouped-query attention (spec §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GqaMode {
    /// Option B: every KV group drops the same number of query heads; swaps stay in a group.
    PerGroup,
    /// Option A: whole KV groups (their query heads and the KV head) are the unit.
    WholeGroup,
}

crate::kinds!(GqaMode, "GQA unit" {
    PerGroup => "every KV group drops the same number of query heads; all KV heads stay",
    WholeGroup => "whole KV groups (query heads and KV head) are pruned",
});

/// Serde for `Vec<f64>` fields whose values are f32s widened: stored as f32. A value that is
/// not exactly an f32 is refused when stored, never rounded in silence.
pub mod as_f32 {
    use serde::{de::Deserializer, ser::Error, Deserialize, Serializer};

    /// Writes the values as f32, refusing any that an f32 does not hold exactly. Encoded as a
    /// `Vec<f32>` is, without building one (a LLaMA-7B `g_cov` would be a 485 MB copy).
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        if let Some((i, &x)) = v.iter().enumerate().find(|&(_, &x)| f64::from(x as f32) != x && !x.is_nan()) {
            return Err(S::Error::custom(format!(
                "value {i} ({x:e}) is not an f32: statistics stored as f32 must be computed in f32"
            )));
        }
        s.collect_seq(v.iter().map(|&x| x as f32))
    }

    /// Reads f32 values, widened to f64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<f32>::deserialize(d)?.into_iter().map(f64::from).collect())
    }
}

/// Dense layer importance: `cos[l]` = mean over tokens of cos(X^(l+1), X^(l)) (spec §3.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerImportance {
    /// One value per decoder layer.
    pub cos: Vec<f64>,
    /// Tokens averaged over.
    pub n_tokens: usize,
}

/// Statistics of one layer's attention sufficient for every head scorer and every o_proj
/// recovery, affine or least-squares (spec §13.2). `Y_h = Z_h · W_O^(h)ᵀ` is head h's contribution to the
/// attention output, `Z` the per-head attention output before o_proj.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttnStats {
    /// Decoder layer.
    pub layer: usize,
    /// Tokens `n`.
    pub n_tokens: usize,
    /// Query heads `H` of the layer when captured.
    pub num_heads: usize,
    /// Per-head width `d_h`.
    pub head_dim: usize,
    /// Residual width `d`.
    pub hidden: usize,
    /// `[H, d]`: mean over tokens of `Y_h`.
    #[serde(with = "as_f32")]
    pub head_mean: Vec<f64>,
    /// `[d, H, H]`: `cov_n(Y_h[:,k], Y_g[:,k])` for output dimension k.
    #[serde(with = "as_f32")]
    pub head_cov: Vec<f64>,
    /// `[H·d_h]`: mean of each o_proj input channel (column of `Z`).
    #[serde(with = "as_f32")]
    pub z_mean: Vec<f64>,
    /// `[H·d_h]`: mean of the square of each o_proj input channel.
    #[serde(with = "as_f32")]
    pub z_sq_mean: Vec<f64>,
    /// `[H·d_h, H·d_h]`: population covariance of `Z`, the o_proj input (head h owns
    /// channels `h·d_h..(h+1)·d_h`); the least-squares refit of o_proj solves with it.
    #[serde(with = "as_f32")]
    pub z_cov: Vec<f64>,
}

/// Statistics of one layer's MLP sufficient for every channel scorer and the affine
/// down_proj recovery. `U` is the MLP input, `G = SiLU(U W_gᵀ) ⊙ (U W_uᵀ)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpStats {
    /// Decoder layer.
    pub layer: usize,
    /// Tokens `n`.
    pub n_tokens: usize,
    /// Residual width `d`.
    pub hidden: usize,
    /// Intermediate width `m` when captured.
    pub intermediate: usize,
    /// `[d]`: mean of `U[:,k]²` (so `‖U[:,k]‖₂ = sqrt(n · u_sq_mean[k])`).
    #[serde(with = "as_f32")]
    pub u_sq_mean: Vec<f64>,
    /// `[m]`: mean of `G[:,j]`.
    #[serde(with = "as_f32")]
    pub g_mean: Vec<f64>,
    /// `[m, m]`: population covariance of `G`, the f32 values the capture computes, kept as f32 in
    /// memory too (a LLaMA-7B layer's is 485 MB, 969 MB in f64); readers widen what they use.
    /// Encoded as the other statistics are ([`as_f32`] writes a `Vec<f32>`'s bytes).
    pub g_cov: Vec<f32>,
}

/// Affine correction of an output projection: `W ← diag(scale)·W[:, kept]`, `bias ← bias`
/// (spec §3.7, §3.10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// `[d]` per-output-dimension scale `a_k`.
    pub scale: Vec<f64>,
    /// `[d]` per-output-dimension bias `b_k`.
    pub bias: Vec<f64>,
}

impl AttnStats {
    /// Checks that every array has the length its dimensions say; the scorers and the
    /// recovery call this before reading.
    pub fn validate(&self) -> Result<(), String> {
        let (h, d, dh) = (self.num_heads, self.hidden, self.head_dim);
        if h == 0 || d == 0 || dh == 0 {
            return Err(format!("layer {}: empty attention statistics (H={h}, d={d}, d_h={dh})", self.layer));
        }
        // Checked: the dimensions come from decoded bytes, and [H·d_h]² overflows first.
        let size = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        for (name, len, want) in [
            ("head_mean", self.head_mean.len(), size(&[h, d])),
            ("head_cov", self.head_cov.len(), size(&[d, h, h])),
            ("z_mean", self.z_mean.len(), size(&[h, dh])),
            ("z_sq_mean", self.z_sq_mean.len(), size(&[h, dh])),
            ("z_cov", self.z_cov.len(), size(&[h, dh, h, dh])),
        ] {
            match want {
                Some(want) if len == want => {}
                Some(want) => return Err(format!("layer {}: {name} has {len} values, expected {want}", self.layer)),
                None => return Err(format!("layer {}: {name} size overflows (H={h}, d={d}, d_h={dh})", self.layer)),
            }
        }
        Ok(())
    }
}

impl MlpStats {
    /// Checks that every array has the length its dimensions say.
    pub fn validate(&self) -> Result<(), String> {
        let (d, m) = (self.hidden, self.intermediate);
        if d == 0 || m == 0 {
            return Err(format!("layer {}: empty MLP statistics (d={d}, m={m})", self.layer));
        }
        for (name, len, want) in [
            ("u_sq_mean", self.u_sq_mean.len(), d),
            ("g_mean", self.g_mean.len(), m),
            ("g_cov", self.g_cov.len(), m * m),
        ] {
            if len != want {
                return Err(format!("layer {}: {name} has {len} values, expected {want}", self.layer));
            }
        }
        Ok(())
    }
}

/// First-order Taylor importance of one layer's structures (LLM-Pruner's `|∂ℒ/∂W ⊙ W|`,
/// the gradient of the dense model's mean next-token loss on the calibration windows),
/// summed over each structure's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaylorLayer {
    /// Decoder layer.
    pub layer: usize,
    /// Query heads `H`.
    pub num_heads: usize,
    /// KV heads `H_kv`.
    pub num_kv_heads: usize,
    /// Intermediate width `m`.
    pub intermediate: usize,
    /// `[H]`: over query head h's `d_h` rows of q_proj.
    pub q: Vec<f64>,
    /// `[H_kv]`: over KV head k's `d_h` rows of k_proj.
    pub k: Vec<f64>,
    /// `[H_kv]`: over KV head k's `d_h` rows of v_proj.
    pub v: Vec<f64>,
    /// `[H]`: over query head h's `d_h` input columns of o_proj.
    pub o: Vec<f64>,
    /// `[m]`: over row j of gate_proj.
    pub gate: Vec<f64>,
    /// `[m]`: over row j of up_proj.
    pub up: Vec<f64>,
    /// `[m]`: over input column j of down_proj.
    pub down: Vec<f64>,
}

/// [`TaylorLayer`] of every decoder layer, from one gradient pass of the dense model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaylorStats {
    /// The mean next-token loss the gradient is of (nats).
    pub loss: f64,
    /// One per decoder layer.
    pub layers: Vec<TaylorLayer>,
}

impl TaylorStats {
    /// Checks that every layer is numbered in order and every array has the length its
    /// dimensions say, with finite non-negative values.
    pub fn validate(&self) -> Result<(), String> {
        for (i, t) in self.layers.iter().enumerate() {
            if t.layer != i {
                return Err(format!("Taylor entry {i} is numbered layer {}", t.layer));
            }
            let (h, k, m) = (t.num_heads, t.num_kv_heads, t.intermediate);
            if h == 0 || k == 0 || m == 0 {
                return Err(format!("layer {i}: empty Taylor statistics (H={h}, H_kv={k}, m={m})"));
            }
            for (name, v, want) in [
                ("q", &t.q, h),
                ("k", &t.k, k),
                ("v", &t.v, k),
                ("o", &t.o, h),
                ("gate", &t.gate, m),
                ("up", &t.up, m),
                ("down", &t.down, m),
            ] {
                if v.len() != want {
                    return Err(format!("layer {i}: Taylor {name} has {} values, expected {want}", v.len()));
                }
                if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
                    return Err(format!("layer {i}: Taylor {name} holds {x}, not a finite non-negative sum"));
                }
            }
        }
        Ok(())
    }
}
