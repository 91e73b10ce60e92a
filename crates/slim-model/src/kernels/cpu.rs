//! Fused f32 kernels on host slices: the steps of the forward pass that burn-flex runs as
//! chains of separate elementwise ops (RMSNorm, SiLU·up, RoPE, masked softmax attention).
//!
//! Each is one pass over memory, parallel over rows on the kernels' team ([`team`]), and written branch-free so
//! that the compiler vectorizes it. The matrix products inside attention go through the
//! `gemm` crate (the one burn-flex's matmul uses), never through loops of ours.

use super::team::{self, Disjoint};
use std::mem::MaybeUninit;

/// Rows per task are chosen so a task touches at least this many elements.
const MIN_TASK_ELEMS: usize = 1 << 14;

fn rows_per_task(row_len: usize) -> usize {
    MIN_TASK_ELEMS.div_ceil(row_len.max(1)).max(1)
}

/// A vector of `len` floats that `fill` writes, not zeroed first (a profile of a 128-token prefill had 1.6 % of
/// its samples in `memset`, from zeroing outputs like these and the prefill kernel's buffers).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
unsafe fn written(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialization.
    unsafe { v.set_len(len) };
    fill(&mut v);
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `fill` wrote every element (the caller vouches); same allocation, length and capacity, and
    // MaybeUninit<f32> has f32's layout.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// Whether the CPU has AVX2 and FMA (a cached check).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `fn $name(args)` that runs the `#[inline(always)]` function `$body` compiled for AVX2 and FMA where the CPU has
/// them (8 lanes; the release build's baseline is SSE2, 4 lanes) and for the baseline elsewhere. The body must be a
/// function: closures inside a `#[target_feature]` function are not compiled for its features. The results are the
/// same bits either way: the compiler does not fuse a multiply and an add, or reorder a sum, on its own.
macro_rules! avx2_or_baseline {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX2 and FMA (checked).
                return unsafe { wide($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

/// `e^x` in f32, branch-free (Cephes `expf`: range reduction by ln 2, degree-6 polynomial,
/// exponent assembled in the bits). Relative error below 3e-7 on [-87, 88] (tested); NaN
/// stays NaN; inputs are clamped to [-87, 88], so `e^x` for x < -87 reads as about 1.6e-38.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the polynomial's coefficients as published, digit for digit
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer, and the integer
    // sits in the low mantissa bits of the sum.
    const MAGIC: f32 = 12_582_912.0;
    #[allow(clippy::manual_clamp)]
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    y * f32::from_bits(((k + 127) << 23) as u32)
}

/// `x · wt (+ bias)`: `x` is `[n, in]`, `wt` is `[in, out]`, both row-major. The bias, when
/// given, is written into the output first and the product accumulated onto it.
///
/// This calls `gemm` directly: on SmolLM2's projection shapes (1024 × 576 by 576 × 1536,
/// and the 49,152-wide lm_head) it ran 1.5–1.7× faster than the same `gemm` behind
/// burn-flex's `matmul` (`examples/mmprof.rs`, docs/measurements.md).
pub(crate) fn linear(x: &[f32], wt: &[f32], bias: Option<&[f32]>, inp: usize) -> Vec<f32> {
    let n = x.len() / inp.max(1);
    let out = wt.len() / inp.max(1);
    assert_eq!(x.len(), n * inp, "linear: input is not [n, {inp}]");
    assert_eq!(wt.len(), inp * out, "linear: weight is not [{inp}, out]");
    if inp == 0 {
        // An empty product: the output is the bias (or zero), and gemm is not asked.
        return match bias {
            Some(b) => b.iter().copied().cycle().take(n * out).collect(),
            None => vec![0.0; n * out],
        };
    }
    let accumulate = bias.is_some();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if let Some(b) = bias {
            assert_eq!(b.len(), out, "linear: bias length");
            y.chunks_exact_mut(out).for_each(|row| row.iter_mut().zip(b).for_each(|(y, &b)| _ = y.write(b)));
        }
        let y = Disjoint(y.as_mut_ptr().cast::<f32>());
        // SAFETY: y is [n, out], x is [n, inp], wt is [inp, out], all row-major and of the lengths asserted above;
        // each call addresses columns c0..c1 of y and wt only, and the calls' column ranges are disjoint.
        let cols =
            |c0: usize, c1: usize| unsafe { gemm_cols(n, inp, y.at(c0), out, accumulate, x, &wt[c0..], c1 - c0) };
        // Columns split over the kernels' team, each part a single-threaded gemm, rather than gemm's own rayon
        // regions: the team's threads spin between regions and rayon's sleep, so mixing the two made each hand-off
        // a wake-up (and a spinning team thread competed with rayon's for the core).
        let chunks =
            if n * out * inp >= 1 << 21 { (4 * rayon::current_num_threads()).min(out.div_ceil(16)) } else { 1 };
        let edge = |c: usize| (c * out.div_ceil(16) / chunks * 16).min(out);
        team::run(chunks, |c| cols(edge(c), edge(c + 1)));
    };
    // SAFETY: every element is written: with a bias first (then accumulated onto), without one by gemm with
    // `read_dst = false`, which writes every element of its columns without reading them (zeroing the output was
    // 2-4 % of a prefill profile); the column ranges tile 0..out.
    unsafe { written(n * out, fill) }
}

/// `dst (+)= x · w` for row-major `x` `[n, inp]` and the `cols` columns of `w` (rows `stride` floats apart) into the
/// `cols` columns of `dst` (rows also `stride` apart), on this thread.
///
/// # Safety
/// `dst` must point to `(n - 1)·stride + cols` writable f32s (initialized when `accumulate`) that no other thread
/// accesses meanwhile; `x` must hold `n·inp` elements and `w` at least `(inp - 1)·stride + cols`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_cols(
    n: usize,
    inp: usize,
    dst: *mut f32,
    stride: usize,
    accumulate: bool,
    x: &[f32],
    w: &[f32],
    cols: usize,
) {
    debug_assert!(x.len() >= n * inp && (inp == 0 || w.len() >= (inp - 1) * stride + cols));
    unsafe {
        gemm::gemm(
            n,
            cols,
            inp,
            dst,
            1,
            stride as isize,
            accumulate,
            x.as_ptr(),
            1,
            inp as isize,
            w.as_ptr(),
            1,
            stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Sum of squares with eight independent accumulators (so it vectorizes).
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] * c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// RMSNorm of each row of `x` (`[n, d]`, row-major): `(x / sqrt(mean(x²) + eps)) · w`,
/// in the order HF computes it.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert!(d > 0 && x.len().is_multiple_of(d), "rms_norm: input is not [n, {d}]");
    let rows = rows_per_task(d);
    let fill = |o: &mut [MaybeUninit<f32>]| {
        team::chunks(o, rows * d, |i, o| rms_task(o, &x[i * rows * d..][..o.len()], w, eps))
    };
    // SAFETY: the tasks' chunks tile the output, whole rows each, and `rms_rows` writes every row.
    unsafe { written(x.len(), fill) }
}

avx2_or_baseline!(fn rms_task(o: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], eps: f32) => rms_rows);

/// [`rms_norm`] of the rows of `x` into `o`.
#[inline(always)]
fn rms_rows(o: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, x) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let inv = 1.0 / (sum_sq(x) / d as f32 + eps).sqrt();
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
            o.write(w * (x * inv));
        }
    }
}

/// SwiGLU on fused projections: each row of `gu` (`[n, 2f]`) is `[gate | up]`, and the
/// result (`[n, f]`) is `silu(gate) · up` with `silu(g) = g / (1 + e^{-g})`.
pub(crate) fn silu_mul(gu: &[f32], f: usize) -> Vec<f32> {
    assert!(f > 0 && gu.len().is_multiple_of(2 * f), "silu_mul: input is not [n, 2·{f}]");
    let rows = rows_per_task(f);
    let fill = |o: &mut [MaybeUninit<f32>]| {
        team::chunks(o, rows * f, |i, o| silu_task(o, &gu[i * rows * 2 * f..][..2 * o.len()], f))
    };
    // SAFETY: the tasks' chunks tile the output, whole rows each, and `silu_rows` writes every row.
    unsafe { written(gu.len() / 2, fill) }
}

avx2_or_baseline!(fn silu_task(o: &mut [MaybeUninit<f32>], gu: &[f32], f: usize) => silu_rows);

/// [`silu_mul`] of the rows of `gu` into `o`.
#[inline(always)]
fn silu_rows(o: &mut [MaybeUninit<f32>], gu: &[f32], f: usize) {
    for (o, gu) in o.chunks_exact_mut(f).zip(gu.chunks_exact(2 * f)) {
        let (g, u) = gu.split_at(f);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            o.write(g / (1.0 + exp_f32(-g)) * u);
        }
    }
}

/// Rotary embedding, HF "rotate half" convention, of `x` laid out `[batch·len, width]` with
/// `width = heads·dh`: row `r` is at table row `r % len`. `cos`/`sin` are `[len, dh]` tables
/// (each half repeated, as HF builds them).
pub(crate) fn rope(x: &[f32], width: usize, len: usize, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    rope_cols(x, width, 0, width, len, cos, sin)
}

/// [`rope`] of columns `c0..c0 + width` of `x`, whose rows are `stride` floats (the queries or keys inside the
/// fused q/k/v product, read where they are instead of copied out first): `[rows, width]`.
pub(crate) fn rope_cols(
    x: &[f32],
    stride: usize,
    c0: usize,
    width: usize,
    len: usize,
    cos: &[f32],
    sin: &[f32],
) -> Vec<f32> {
    if x.is_empty() || width == 0 {
        return Vec::new();
    }
    let dh = cos.len() / len.max(1);
    assert!(dh > 0 && dh.is_multiple_of(2) && width.is_multiple_of(dh), "rope: {width} columns are not heads of {dh}");
    assert!(
        c0 + width <= stride && x.len().is_multiple_of(stride),
        "rope: columns {c0}.. + {width} of rows of {stride}"
    );
    assert!(cos.len() == len * dh && sin.len() == cos.len(), "rope: tables are not [{len}, {dh}]");
    let rows = rows_per_task(width);
    let fill = |o: &mut [MaybeUninit<f32>]| {
        team::chunks(o, rows * width, |task, o| {
            let x = &x[task * rows * stride..][..o.len() / width * stride];
            rope_task(o, x, (stride, c0, width), (task * rows) % len, len, cos, sin)
        })
    };
    // SAFETY: the tasks' chunks tile the output, whole rows each, and `rope_rows` writes every head (dh even) of
    // every row.
    unsafe { written(x.len() / stride * width, fill) }
}

avx2_or_baseline!(
    fn rope_task(
        o: &mut [MaybeUninit<f32>],
        x: &[f32],
        cols: (usize, usize, usize),
        first: usize,
        len: usize,
        cos: &[f32],
        sin: &[f32],
    ) => rope_rows
);

/// [`rope_cols`] of the rows of `x` into `o` (`cols`: row stride, first column, width), the first row at table
/// row `first`.
#[inline(always)]
fn rope_rows(
    o: &mut [MaybeUninit<f32>],
    x: &[f32],
    (stride, c0, width): (usize, usize, usize),
    first: usize,
    len: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let dh = cos.len() / len;
    let half = dh / 2;
    for (i, (o, x)) in o.chunks_exact_mut(width).zip(x.chunks_exact(stride)).enumerate() {
        let p = (first + i) % len;
        let (c, s) = (&cos[p * dh..p * dh + half], &sin[p * dh..p * dh + half]);
        for (o, x) in o.chunks_exact_mut(dh).zip(x[c0..c0 + width].chunks_exact(dh)) {
            let (x1, x2) = x.split_at(half);
            let (o1, o2) = o.split_at_mut(half);
            for (((o1, o2), (&a, &b)), (&c, &s)) in o1.iter_mut().zip(o2).zip(x1.iter().zip(x2)).zip(c.iter().zip(s)) {
                o1.write(a * c - b * s);
                o2.write(b * c + a * s);
            }
        }
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnDims {
    pub batch: usize,
    /// Query positions per sequence.
    pub q_len: usize,
    /// Key positions per sequence; query `i` sees keys `0..=i + kv_len - q_len`.
    pub kv_len: usize,
    pub head_dim: usize,
}

/// Causal scaled-dot-product attention with grouped KV heads.
///
/// `q` is `[batch·q_len, hq·dh]`, `k` and `v` are `[batch·kv_len, hk·dh]` (token-major, as
/// the projections produce them, RoPE already applied), and query head `h` reads KV head
/// `kv_head_of[h]`. Returns `[batch·q_len, hq·dh]`: the per-head outputs side by side, as
/// o_proj reads them. Scores are `q·kᵀ · scale`, softmax in f32 over the visible keys.
pub(crate) fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_head_of: &[usize],
    d: AttnDims,
    scale: f32,
) -> Vec<f32> {
    attend(q, k, v, kv_head_of, d, scale, false).0
}

/// [`causal_attention`], and with `keep_probs` also its probabilities (`[batch, hq, q_len,
/// kv_len]`, zero above the diagonal; empty without), which the backward pass reads.
pub(crate) fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_head_of: &[usize],
    d: AttnDims,
    scale: f32,
    keep_probs: bool,
) -> (Vec<f32>, Vec<f32>) {
    let AttnDims { batch, q_len: tq, kv_len: tk, head_dim: dh } = d;
    let hq = kv_head_of.len();
    if batch * tq * hq * dh == 0 {
        return (Vec::new(), Vec::new());
    }
    let (qw, kw) = (hq * dh, k.len() / (batch * tk).max(1));
    assert!(tk >= tq, "attention: {tk} keys for {tq} queries");
    assert_eq!(q.len(), batch * tq * qw, "attention: query buffer size");
    assert_eq!(k.len(), v.len(), "attention: key and value buffer sizes differ");
    assert!(kv_head_of.iter().all(|&j| (j + 1) * dh <= kw), "attention: KV head out of range");
    let mut probs = Vec::new();
    // Each (sequence, head) writes its output straight into its columns of the result, `[batch·tq, hq·dh]`.
    let fill = |z: &mut [MaybeUninit<f32>]| {
        let z = Disjoint(z.as_mut_ptr().cast::<f32>());
        let head = |task: usize, probs: Option<&mut [f32]>| {
            let (b, h) = (task / hq, task % hq);
            let j = kv_head_of[h];
            let (q0, k0, v0) = (&q[b * tq * qw + h * dh..], &k[b * tk * kw + j * dh..], &v[b * tk * kw + j * dh..]);
            // SAFETY: the block of rows b·tq.. + tq and columns h·dh.. + dh is inside the result, whose rows are
            // qw floats apart, and this task's alone.
            unsafe { head_attention(q0, qw, k0, v0, kw, d, scale, probs, z.at(b * tq * qw + h * dh), qw) };
        };
        if keep_probs {
            probs = vec![0f32; batch * hq * tq * tk];
            team::chunks(&mut probs, tq * tk, |task, p| head(task, Some(p)));
        } else {
            team::run(batch * hq, |task| head(task, None));
        }
    };
    // SAFETY: the tasks (b, h) cover every sequence and head, and each writes all tq rows × dh columns of its own
    // block (`head_attention`), so every element is written, once.
    let z = unsafe { written(batch * tq * qw, fill) };
    (z, probs)
}

/// Query rows per block of [`head_attention`]: a block's scores stop at the last key its last
/// row sees, so a causal prompt computes about half of the `q·kᵀ` and `p·v` products.
const QUERY_BLOCK: usize = 64;

/// One (sequence, head) of [`causal_attention`]: `q0` starts at the head's first query value
/// (row stride `qw`), `k0` and `v0` at its KV head's first key and value (row stride `kw`).
/// Writes the head's output to `out` (`tq` rows of `dh` floats, `ow` apart), and, when `probs` is given, the
/// probabilities to it (`[tq, tk]`, zero above the diagonal).
///
/// Queries go in blocks of [`QUERY_BLOCK`] rows, each against the keys its rows can see.
///
/// # Safety
/// `out` points to `tq` rows of `dh` writable floats, `ow >= dh` apart, that nothing else accesses meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn head_attention(
    q0: &[f32],
    qw: usize,
    k0: &[f32],
    v0: &[f32],
    kw: usize,
    d: AttnDims,
    scale: f32,
    mut probs: Option<&mut [f32]>,
    out: *mut f32,
    ow: usize,
) {
    let AttnDims { q_len: tq, kv_len: tk, head_dim: dh, .. } = d;
    let offset = tk - tq;
    assert!(probs.as_ref().is_none_or(|p| p.len() == tq * tk), "head_attention: probability buffer size");
    let reach = |len: usize, rows: usize, stride: usize| rows == 0 || (rows - 1) * stride + dh <= len;
    assert!(reach(q0.len(), tq, qw) && reach(k0.len(), tk, kw) && reach(v0.len(), tk, kw), "head_attention: views");
    let mut scratch = Vec::new();
    for i0 in (0..tq).step_by(QUERY_BLOCK) {
        let i1 = (i0 + QUERY_BLOCK).min(tq);
        // Keys the block's last row sees: every row of the block sees a prefix of them.
        let seen = (i1 + offset).min(tk);
        let (scores, stride) = match probs.as_deref_mut() {
            Some(p) => (&mut p[i0 * tk..i1 * tk], tk),
            None => {
                scratch.resize((i1 - i0) * seen, 0.0);
                (&mut scratch[..], seen)
            }
        };
        // SAFETY: every pointer/stride pair addresses only elements inside the slice it comes
        // from (checked above; `out`'s by the caller): rows i0..i1 < tq of q (stride qw) and out (stride ow), rows
        // < i1 - i0 of scores (stride `stride` >= seen), keys < seen <= tk of k and v (stride
        // kw), columns < dh or < seen.
        unsafe {
            gemm::gemm(
                i1 - i0,
                seen,
                dh,
                scores.as_mut_ptr(),
                1,
                stride as isize,
                false,
                q0.as_ptr().add(i0 * qw),
                1,
                qw as isize,
                k0.as_ptr(),
                kw as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (r, row) in scores.chunks_exact_mut(stride).enumerate() {
            let (visible, hidden) = row.split_at_mut((i0 + r + offset + 1).min(stride));
            softmax_in_place(visible);
            hidden.fill(0.0);
        }
        // SAFETY: as above.
        unsafe {
            gemm::gemm(
                i1 - i0,
                dh,
                seen,
                out.add(i0 * ow),
                1,
                ow as isize,
                false,
                scores.as_ptr(),
                1,
                stride as isize,
                v0.as_ptr(),
                1,
                kw as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// Lanes of the reductions of [`softmax_in_place`]: eight independent maxima or sums, which the
/// compiler keeps in one vector register (a single running sum is a chain it may not reorder).
const LANES: usize = 8;

avx2_or_baseline!(
    /// `x = softmax(x)` in f32: the maximum subtracted, [`exp_f32`] of every entry, divided by
    /// their sum.
    pub(crate) fn softmax_in_place(x: &mut [f32]) => softmax_row
);

/// [`softmax_in_place`].
#[inline(always)]
fn softmax_row(x: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let max = chunks.remainder().iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)), |m, &v| m.max(v));
    x.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let mut sums = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    let sum = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}
