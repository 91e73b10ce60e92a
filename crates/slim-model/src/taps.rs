//! Activation taps: which intermediate tensors a layer-wise forward pass hands back.

use burn_tensor::{backend::Backend, Tensor};

/// Which activations to return from [`crate::Llama::layer_forward`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapSet {
    /// Per-head attention output before o_proj.
    pub attn_heads: bool,
    /// MLP input (after the post-attention RMSNorm).
    pub mlp_in: bool,
    /// MLP intermediate, SiLU(gate)·up.
    pub mlp_act: bool,
    /// MLP output (down_proj, bias included).
    pub mlp_out: bool,
    /// Attention input (after the input RMSNorm).
    pub attn_in: bool,
}

impl TapSet {
    /// No taps.
    pub const NONE: Self = Self { attn_heads: false, mlp_in: false, mlp_act: false, mlp_out: false, attn_in: false };
    /// Every tap.
    pub const ALL: Self = Self { attn_heads: true, mlp_in: true, mlp_act: true, mlp_out: true, attn_in: true };
}

/// Activations of one layer, flattened over batch and positions (`N = batch·len` rows).
/// The layer's input and output are the argument and result of the forward call itself.
#[derive(Debug)]
pub struct LayerTaps<B: Backend> {
    /// `[N, d]`
    pub attn_in: Option<Tensor<B, 2>>,
    /// `[N, num_heads·head_dim]`, head `h` in columns `h·head_dim..(h+1)·head_dim`.
    pub attn_heads: Option<Tensor<B, 2>>,
    /// `[N, d]`
    pub mlp_in: Option<Tensor<B, 2>>,
    /// `[N, intermediate_size]`
    pub mlp_act: Option<Tensor<B, 2>>,
    /// `[N, d]`
    pub mlp_out: Option<Tensor<B, 2>>,
}

impl<B: Backend> LayerTaps<B> {
    /// No activations yet.
    pub fn empty() -> Self {
        Self { attn_in: None, attn_heads: None, mlp_in: None, mlp_act: None, mlp_out: None }
    }
}
