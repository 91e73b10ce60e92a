//! Per-layer sufficient statistics from activation taps, computed with burn tensor ops and
//! handed back in f64 (spec §13.2).

use anyhow::{ensure, Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use slim_artifact::schema::{AttnStats, MlpStats};
use slim_model::{host_to_tensor, HostTensor};

fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::format_err!("reading statistics back: {e:?}"))
}

fn to_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f64>> {
    Ok(to_f32(t)?.into_iter().map(f64::from).collect())
}

/// The most bytes of `P_h` (and as much for its product with `W_O`) [`attn_stats`] forms at once.
pub const P_CHUNK_BYTES: usize = 256 << 20;

/// Attention statistics of one layer from its per-head outputs `z` and its o_proj weight.
///
/// # Shapes
/// z: `[n, H·d_h]`, o_proj: `[d, H·d_h]`
pub fn attn_stats<B: Backend>(
    layer: usize,
    z: Tensor<B, 2>,
    o_proj: &HostTensor,
    num_heads: usize,
    head_dim: usize,
) -> Result<AttnStats> {
    attn_stats_in(layer, z, o_proj, num_heads, head_dim, P_CHUNK_BYTES)
}

/// [`attn_stats`] forming at most `chunk_bytes` of `P_h` at once (at least one head).
pub(crate) fn attn_stats_in<B: Backend>(
    layer: usize,
    z: Tensor<B, 2>,
    o_proj: &HostTensor,
    num_heads: usize,
    head_dim: usize,
    chunk_bytes: usize,
) -> Result<AttnStats> {
    let [n, hd] = z.dims();
    ensure!(
        hd == num_heads * head_dim,
        "layer {layer}: attention tap has {hd} columns, expected {num_heads}×{head_dim}"
    );
    ensure!(
        o_proj.shape.len() == 2 && o_proj.shape[1] == hd,
        "layer {layer}: o_proj shape {:?} does not match {hd} inputs",
        o_proj.shape
    );
    let d = o_proj.shape[0];
    let device = z.device();
    let z_mean = z.clone().mean_dim(0); // [1, hd]
    let z_sq_mean = z.clone().powi_scalar(2).mean_dim(0); // [1, hd]

    // Y_h = Z_h · W_O^(h)ᵀ, so the covariance of two heads' contributions to output k is
    //   cov(Y_h[:,k], Y_g[:,k]) = W_O[k, h·] · C[h·, g·] · W_O[k, g·]ᵀ
    // with C = cov(Z) ([H·d_h]²): one large product instead of d small ones, and no
    // [H, n, d] tensor. (Profiled: the per-dimension products and the permute they needed
    // were ~12 % of the capture stage.)
    let wo: Tensor<B, 2> = host_to_tensor(o_proj, &device)?; // [d, hd]
    let zc = z - z_mean.clone();
    // C is also stored (`z_cov`) for the least-squares refit of o_proj; computed as g_cov is.
    let c = zc.clone().transpose().matmul(zc).div_scalar(n as f64); // [hd, hd]
    let z_cov = to_f64(c.clone())?;
    // P_h = W_O[:, h·] · C[h·, :]: [H, d, hd], formed a few heads at a time: all of it is
    // H·d·hd values, 2.1 GB for LLaMA-7B (and as much again for its product with W_O), while each
    // head's part is computed alone anyway (a batch of the matmul), so the values are the same.
    let wo_blocks = wo.clone().reshape([d, num_heads, head_dim]).swap_dims(0, 1); // [H, d, d_h]
    let c_rows = c.reshape([num_heads, head_dim, hd]); // [H, d_h, hd]
    let per_head = d * hd * std::mem::size_of::<f32>();
    let chunk = (chunk_bytes / per_head.max(1)).clamp(1, num_heads);
    let mut parts = Vec::with_capacity(num_heads.div_ceil(chunk));
    for h0 in (0..num_heads).step_by(chunk) {
        let nh = chunk.min(num_heads - h0);
        // p: [nh, d, hd]; cov[k, h, g] = Σ_j P_h[k, g·d_h + j] · W_O[k, g·d_h + j]
        let p = wo_blocks.clone().narrow(0, h0, nh).matmul(c_rows.clone().narrow(0, h0, nh));
        let part = (p * wo.clone().unsqueeze::<3>()).reshape([nh, d, num_heads, head_dim]).sum_dim(3); // [nh, d, H, 1]
        parts.push(part);
    }
    let cov = Tensor::cat(parts, 0); // [H, d, H, 1]
    let cov = cov.reshape([num_heads, d, num_heads]).swap_dims(0, 1); // [d, H, H]

    // mean of Y_h = mean(Z_h) · W_O^(h)ᵀ: [H, d]
    let zm = z_mean.clone().reshape([num_heads, 1, head_dim]); // [H, 1, d_h]
    let mean = zm.matmul(wo_blocks.swap_dims(1, 2)); // [H, 1, d]
    let stats = AttnStats {
        layer,
        n_tokens: n,
        num_heads,
        head_dim,
        hidden: d,
        head_mean: to_f64(mean.reshape([num_heads, d]))?,
        head_cov: to_f64(cov)?,
        z_mean: to_f64(z_mean)?,
        z_sq_mean: to_f64(z_sq_mean)?,
        z_cov,
    };
    ensure_finite(
        layer,
        "attention",
        [&stats.head_mean, &stats.head_cov, &stats.z_mean, &stats.z_sq_mean, &stats.z_cov],
    )?;
    Ok(stats)
}

/// MLP statistics of one layer from its input `u` and intermediate `g`.
///
/// # Shapes
/// u: `[n, d]`, g: `[n, m]`
pub fn mlp_stats<B: Backend>(layer: usize, u: Tensor<B, 2>, g: Tensor<B, 2>) -> Result<MlpStats> {
    let [n, d] = u.dims();
    let [n2, m] = g.dims();
    ensure!(n == n2, "layer {layer}: MLP taps have {n} and {n2} rows");
    let u_sq_mean = u.powi_scalar(2).mean_dim(0); // [1, d]
    let g_mean = g.clone().mean_dim(0); // [1, m]
    let gc = g - g_mean.clone();
    let cov = gc.clone().transpose().matmul(gc).div_scalar(n as f64); // [m, m]
    let stats = MlpStats {
        layer,
        n_tokens: n,
        hidden: d,
        intermediate: m,
        u_sq_mean: to_f64(u_sq_mean)?,
        g_mean: to_f64(g_mean)?,
        g_cov: to_f32(cov)?,
    };
    ensure_finite(layer, "MLP", [&stats.u_sq_mean, &stats.g_mean])?;
    ensure!(
        stats.g_cov.iter().all(|x| x.is_finite()),
        "layer {layer}: the MLP activations hold NaN or Inf on the calibration tokens (broken weights or overflow \
        in the layers below); nothing was scored"
    );
    Ok(stats)
}

/// NaN or Inf in the activations would flow silently into every score and fit: stop here,
/// naming the layer and the block.
fn ensure_finite<const N: usize>(layer: usize, block: &str, parts: [&Vec<f64>; N]) -> Result<()> {
    ensure!(
        parts.iter().all(|p| p.iter().all(|x| x.is_finite())),
        "layer {layer}: the {block} activations hold NaN or Inf on the calibration tokens (broken weights or overflow \
        in the layers below); nothing was scored"
    );
    Ok(())
}

/// Mean over rows of the cosine similarity between matching rows of `a` and `b`.
///
/// # Shapes
/// a, b: `[n, d]` → scalar
pub fn mean_row_cosine<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<f64> {
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let na = a.powi_scalar(2).sum_dim(1).sqrt();
    let nb = b.powi_scalar(2).sum_dim(1).sqrt();
    // torch.cosine_similarity clamps each norm at eps = 1e-8.
    let cos = dot / (na.clamp_min(1e-8) * nb.clamp_min(1e-8));
    let v = to_f64(cos.mean())?;
    Ok(v[0])
}

/// Runs layer `l`'s attention on its input `x` and returns its statistics ([`attn_stats`]);
/// `o_proj` is the layer's current o_proj weight.
pub fn capture_attn<B: Backend>(
    m: &slim_model::Llama<B>,
    l: usize,
    x: Tensor<B, 3>,
    o_proj: &HostTensor,
) -> Result<AttnStats> {
    let mut taps = slim_model::LayerTaps::empty();
    let _ = m.attn_block(l, x, slim_model::TapSet { attn_heads: true, ..slim_model::TapSet::NONE }, &mut taps);
    let shape = &m.config().layers[l];
    attn_stats(l, taps.attn_heads.context("attention tap")?, o_proj, shape.num_heads, m.config().head_dim)
}

/// Runs layer `l` on its input `x` and returns its MLP statistics ([`mlp_stats`]) and the
/// output of its attention half (the MLP's input before the norm), for callers that move on.
pub fn capture_mlp<B: Backend>(
    m: &slim_model::Llama<B>,
    l: usize,
    x: Tensor<B, 3>,
) -> Result<(MlpStats, Tensor<B, 3>)> {
    let mut taps = slim_model::LayerTaps::empty();
    let h = m.attn_block(l, x, slim_model::TapSet::NONE, &mut taps);
    let _ = m.mlp_block(
        l,
        h.clone(),
        slim_model::TapSet { mlp_in: true, mlp_act: true, ..slim_model::TapSet::NONE },
        &mut taps,
    );
    Ok((mlp_stats(l, taps.mlp_in.context("mlp_in tap")?, taps.mlp_act.context("mlp_act tap")?)?, h))
}
