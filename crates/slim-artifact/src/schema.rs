//! Plain-data schema of every artifact. All statistics are population statistics
//! (divided by the number of tokens `n`), in f64, row-major.

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

/// Dense layer importance: `cos[l]` = mean over tokens of cos(X^(l+1), X^(l)) (spec §3.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerImportance {
    /// One value per decoder layer.
    pub cos: Vec<f64>,
    /// Tokens averaged over.
    pub n_tokens: usize,
}

/// Statistics of one layer's attention sufficient for every head scorer and the affine
/// o_proj recovery (spec §13.2). `Y_h = Z_h · W_O^(h)ᵀ` is head h's contribution to the
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
    pub head_mean: Vec<f64>,
    /// `[d, H, H]`: `cov_n(Y_h[:,k], Y_g[:,k])` for output dimension k.
    pub head_cov: Vec<f64>,
    /// `[H·d_h]`: mean of each o_proj input channel (column of `Z`).
    pub z_mean: Vec<f64>,
    /// `[H·d_h]`: mean of the square of each o_proj input channel.
    pub z_sq_mean: Vec<f64>,
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
    pub u_sq_mean: Vec<f64>,
    /// `[m]`: mean of `G[:,j]`.
    pub g_mean: Vec<f64>,
    /// `[m, m]`: population covariance of `G`.
    pub g_cov: Vec<f64>,
}

/// Which heads and channels one layer keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerKeep {
    /// Kept query heads, sorted ascending (so groups stay contiguous).
    pub heads: Vec<usize>,
    /// Kept KV heads, sorted ascending.
    pub kv_heads: Vec<usize>,
    /// Kept MLP channels, sorted ascending.
    pub channels: Vec<usize>,
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
        for (name, len, want) in [
            ("head_mean", self.head_mean.len(), h * d),
            ("head_cov", self.head_cov.len(), d * h * h),
            ("z_mean", self.z_mean.len(), h * dh),
            ("z_sq_mean", self.z_sq_mean.len(), h * dh),
        ] {
            if len != want {
                return Err(format!("layer {}: {name} has {len} values, expected {want}", self.layer));
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
        for (name, len, want) in [("u_sq_mean", self.u_sq_mean.len(), d), ("g_mean", self.g_mean.len(), m), ("g_cov", self.g_cov.len(), m * m)] {
            if len != want {
                return Err(format!("layer {}: {name} has {len} values, expected {want}", self.layer));
            }
        }
        Ok(())
    }
}
