//! Projections whose weights stay in half precision (f16 or bf16, as a model is stored) and in
//! the layout they are stored in (`[out, in]`: one output's weights contiguous), widened to f32
//! inside the product: inputs, outputs and sums are f32, so the result is the f32 product of the
//! input with the weights' exact values (every half value is an f32), up to the order of the sums.
//!
//! Why: a decoded token reads every weight once, so decoding is bound by the bytes of weight read
//! per token, and half-precision weights halve them. Two shapes of work:
//! - a few rows (decoding, batch 1 to [`GEMV_ROWS`]): each thread takes a block of outputs and
//!   streams their weight rows once, contiguously, as dot products with the input rows (AVX2 and
//!   FMA when the CPU has them, detected at run time);
//! - more rows (prefill): with AVX2, [`super::prefill`]'s kernel widens blocks of weight rows into
//!   L1 and multiplies them by the rows without packing; without it the weight is widened a band
//!   of outputs at a time (up to [`TILE_FLOATS`] floats) into an f32 buffer, and gemm accumulates
//!   `y += x · bandᵀ`, so the widening is amortized over the rows.

use half::{bf16, f16};
use rayon::prelude::*;

/// Rows up to which the dot-product kernel runs instead of tiles through gemm.
pub(crate) const GEMV_ROWS: usize = 4;

/// Weights from which the dot-product kernel splits its outputs between threads.
const PARALLEL_ELEMENTS: usize = 1 << 18;

/// Floats of one widened tile of the prefill path (16 MiB): a whole decoder-layer matrix of the
/// models here fits one tile, so its product is one gemm call as in f32; a larger one (an lm_head)
/// is taken a band of outputs at a time.
const TILE_FLOATS: usize = 1 << 22;

/// A half-precision element that widens to f32 exactly.
pub(crate) trait Half: Copy + Send + Sync + 'static {
    /// `dst[i] = src[i]` in f32.
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl Half for bf16 {
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        // bf16 is the upper half of an f32: a shift, which vectorizes.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
}

impl Half for f16 {
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "widen: lengths differ");
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c") {
            // SAFETY: the CPU has the features the loop is compiled for (checked just above).
            unsafe { widen_f16c(src, dst) };
            return;
        }
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
}

/// [`Half::widen`] of f16 with F16C, eight values an instruction, in one call (`half`'s slice conversion calls a
/// function per eight values: 6 % of a 128-token f16 prefill profile of SmolLM2 against 5 % with this loop).
///
/// # Safety
/// The CPU must have AVX and F16C; `dst` must be as long as `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let whole = src.len() - src.len() % 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= whole <= src.len() == dst.len().
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    for (d, s) in dst[whole..].iter_mut().zip(&src[whole..]) {
        *d = s.to_f32();
    }
}

/// `x · wᵀ (+ bias)` with `w` in half precision, as stored.
///
/// # Shapes
/// x: `[n, inp]`, w: `[out, inp]`, bias: `[out]` → `[n, out]`
pub(crate) fn linear<T: Half>(x: &[f32], w: &[T], bias: Option<&[f32]>, inp: usize) -> Vec<f32> {
    let n = x.len() / inp.max(1);
    let out = w.len() / inp.max(1);
    assert_eq!(x.len(), n * inp, "linear: input is not [n, {inp}]");
    assert_eq!(w.len(), inp * out, "linear: weight is not [out, {inp}]");
    if let Some(b) = bias {
        assert_eq!(b.len(), out, "linear: bias length");
    }
    #[cfg(target_arch = "x86_64")]
    if n > GEMV_ROWS && inp > 0 && out > 0 && avx::available::<T>() {
        // Writes every output once: no zeroed (or bias-filled) buffer first.
        return super::prefill::linear(x, w, bias, n, inp, out);
    }
    let mut y = match bias {
        Some(b) => b.iter().copied().cycle().take(n * out).collect(),
        None => vec![0f32; n * out],
    };
    if inp == 0 || n == 0 || out == 0 {
        return y;
    }
    if n <= GEMV_ROWS {
        dots(x, w, &mut y, n, inp, out);
    } else {
        tiles(x, w, &mut y, n, inp, out);
    }
    y
}

/// Blocks of outputs in parallel, each output's weights read once as dot products with the rows.
fn dots<T: Half>(x: &[f32], w: &[T], y: &mut [f32], n: usize, inp: usize, out: usize) {
    // One block per thread, and one block for a small weight: a fork-join per product costs
    // microseconds, and decoding runs seven products a layer.
    let threads = if inp * out >= PARALLEL_ELEMENTS { rayon::current_num_threads().max(1) } else { 1 };
    let block = out.div_ceil(threads);
    let mut blocks = vec![Vec::new(); out.div_ceil(block)];
    super::team::chunks(&mut blocks, 1, |b, slot| {
        let (o0, o1) = (b * block, ((b + 1) * block).min(out));
        let mut acc = vec![0f32; n * (o1 - o0)];
        block_dots(x, &w[o0 * inp..o1 * inp], &mut acc, n, inp);
        slot[0] = acc;
    });
    for (b, acc) in blocks.iter().enumerate() {
        let (o0, m) = (b * block, acc.len() / n);
        for r in 0..n {
            for (dst, a) in y[r * out + o0..r * out + o0 + m].iter_mut().zip(&acc[r * m..(r + 1) * m]) {
                *dst += a;
            }
        }
    }
}

/// `acc[r, o] = x[r, :] · w[o, :]` for the `m = w.len() / inp` outputs of `w`.
fn block_dots<T: Half>(x: &[f32], w: &[T], acc: &mut [f32], n: usize, inp: usize) {
    // (outputs, inputs) the vector kernel did: every output over the inputs up to a multiple of
    // its step, or nothing without AVX2.
    #[allow(unused_mut)]
    let mut done = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if avx::available::<T>() {
        // SAFETY: the CPU has the features the kernel is compiled for (checked just above).
        done = unsafe { avx::dots(x, w, acc, n, inp) };
    }
    portable_dots(x, w, acc, n, inp, done);
}

/// What the vector kernel left of [`block_dots`] (`done`: the outputs it did, over the inputs
/// up to `done.1`): the other inputs of those outputs, all inputs of the others.
fn portable_dots<T: Half>(x: &[f32], w: &[T], acc: &mut [f32], n: usize, inp: usize, done: (usize, usize)) {
    let m = w.len() / inp;
    if done.0 == m && done.1 == inp {
        return;
    }
    let mut row = vec![0f32; inp];
    for o in 0..m {
        let from = if o < done.0 { done.1 } else { 0 };
        if from == inp {
            continue;
        }
        T::widen(&w[o * inp + from..(o + 1) * inp], &mut row[from..]);
        for r in 0..n {
            let xr = &x[r * inp + from..(r + 1) * inp];
            acc[r * m + o] += xr.iter().zip(&row[from..]).map(|(a, b)| a * b).sum::<f32>();
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx {
    //! The AVX2 kernel of [`super::block_dots`], and the feature check and 8-value widening load that the
    //! prefill kernel ([`crate::kernels::prefill`]) shares with it.

    use super::Half;
    use half::{bf16, f16};
    use std::any::TypeId;
    use std::arch::x86_64::*;

    /// Whether the CPU runs the AVX2 kernels (this one, the prefill one) for `T`: AVX2, FMA, and F16C for f16.
    pub(in crate::kernels) fn available<T: Half>() -> bool {
        let base = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        base && (TypeId::of::<T>() != TypeId::of::<f16>() || is_x86_feature_detected!("f16c"))
    }

    /// 8 weights from `p` widened to f32.
    ///
    /// # Safety
    /// The CPU must have AVX2 (and F16C for f16); 8 values are readable from `p`.
    #[inline(always)]
    pub(in crate::kernels) unsafe fn load8<T: Half>(p: *const T) -> __m256 {
        // SAFETY: T is 2 bytes (f16 or bf16), so 8 of them are one 128-bit load, readable as the caller vouches.
        unsafe {
            let h = _mm_loadu_si128(p.cast());
            if TypeId::of::<T>() == TypeId::of::<bf16>() {
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            } else {
                _mm256_cvtph_ps(h)
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }

    /// Each output's dot products with `N` rows over the inputs' multiples of `8·U`, one output
    /// row at a time so that the weights stream in order (interleaving four rows' streams was
    /// half as fast; prefetching 1 or 4 KB ahead did not help), `U` independent sums per row to
    /// hide the FMA latency; returns the outputs done (their inputs past the last multiple of `8·U`
    /// are left to the caller, [`done_inputs`]).
    #[inline(always)]
    unsafe fn dots_of<T: Half, const N: usize, const U: usize>(
        x: &[f32],
        w: &[T],
        acc: &mut [f32],
        inp: usize,
    ) -> usize {
        let m = w.len() / inp;
        let kv = done_inputs(inp, U);
        for o in 0..m {
            unsafe {
                let mut sums = [[_mm256_setzero_ps(); U]; N];
                let wp = w.as_ptr().add(o * inp);
                let mut k = 0;
                while k < kv {
                    let mut wv = [_mm256_setzero_ps(); U];
                    for (u, slot) in wv.iter_mut().enumerate() {
                        *slot = load8(wp.add(k + 8 * u));
                    }
                    for (r, s) in sums.iter_mut().enumerate() {
                        for u in 0..U {
                            let xv = _mm256_loadu_ps(x.as_ptr().add(r * inp + k + 8 * u));
                            s[u] = _mm256_fmadd_ps(xv, wv[u], s[u]);
                        }
                    }
                    k += 8 * U;
                }
                for (r, s) in sums.iter().enumerate() {
                    let mut t = s[0];
                    for sv in &s[1..] {
                        t = _mm256_add_ps(t, *sv);
                    }
                    *acc.get_unchecked_mut(r * m + o) = hsum(t);
                }
            }
        }
        m
    }

    /// The inputs the kernel covers for `U` sums per row.
    fn done_inputs(inp: usize, u: usize) -> usize {
        inp - inp % (8 * u)
    }

    /// The kernel for `n` rows (1 to 4): 4 sums per row for one row, 2 for more, so that the sums
    /// fit the 16 vector registers.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and F16C when `T` is f16 ([`available`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots<T: Half>(x: &[f32], w: &[T], acc: &mut [f32], n: usize, inp: usize) -> (usize, usize) {
        let m = w.len() / inp;
        assert!(n <= super::GEMV_ROWS && x.len() >= n * inp && w.len() == m * inp && acc.len() >= n * m);
        unsafe {
            match n {
                1 => (dots_of::<T, 1, 8>(x, w, acc, inp), done_inputs(inp, 8)),
                2 => (dots_of::<T, 2, 2>(x, w, acc, inp), done_inputs(inp, 2)),
                3 => (dots_of::<T, 3, 2>(x, w, acc, inp), done_inputs(inp, 2)),
                _ => (dots_of::<T, 4, 2>(x, w, acc, inp), done_inputs(inp, 2)),
            }
        }
    }
}

/// Bands of outputs of the weight (all inputs) widened in parallel into an f32 buffer, then
/// `y[:, band] += x · bandᵀ` by gemm: the prefill path of CPUs without the AVX2 kernel ([`super::prefill`]).
pub(super) fn tiles<T: Half>(x: &[f32], w: &[T], y: &mut [f32], n: usize, inp: usize, out: usize) {
    tiles_of(x, w, y, n, inp, out, TILE_FLOATS);
}

/// [`tiles`] with bands of at most `tile_floats` floats (at least one output).
fn tiles_of<T: Half>(x: &[f32], w: &[T], y: &mut [f32], n: usize, inp: usize, out: usize, tile_floats: usize) {
    let band = (tile_floats / inp).clamp(1, out);
    // Every float of a band is written before gemm reads it: grown, never cleared, and kept for the thread's next
    // product (a fresh buffer each product was a page fault and a zeroing per 4 KiB of it). Taken out of the slot
    // while in use: a product this thread runs while it waits inside this one (rayon steals work) gets its own.
    let mut buf = TILE.take();
    if buf.len() < band * inp {
        buf.resize(band * inp, 0.0);
    }
    tiles_in(x, w, y, n, inp, out, &mut buf[..band * inp]);
    TILE.set(buf);
}

thread_local! {
    /// The widened band of [`tiles_of`], one per thread.
    static TILE: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`tiles_of`] with bands of `buf.len() / inp` outputs widened into `buf`.
fn tiles_in<T: Half>(x: &[f32], w: &[T], y: &mut [f32], n: usize, inp: usize, out: usize, buf: &mut [f32]) {
    let band = buf.len() / inp;
    let par = if n * out * inp >= 1 << 21 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    for o0 in (0..out).step_by(band) {
        let mo = band.min(out - o0);
        let tile = &mut buf[..mo * inp];
        tile.par_chunks_mut(inp).zip(w[o0 * inp..(o0 + mo) * inp].par_chunks(inp)).for_each(|(d, s)| T::widen(s, d));
        // SAFETY: y is [n, out] and initialized, and its columns o0..o0 + mo are addressed with
        // row stride out; x is [n, inp]; the tile is [mo, inp] row-major, read as the [inp, mo]
        // matrix tileᵀ (row stride 1, column stride inp).
        unsafe {
            gemm::gemm(
                n,
                mo,
                inp,
                y.as_mut_ptr().add(o0),
                1,
                out as isize,
                true,
                x.as_ptr(),
                1,
                inp as isize,
                tile.as_ptr(),
                inp as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an f64 product of the widened weights, for both element types, for row counts on
    /// both sides of [`GEMV_ROWS`], with and without bias, input widths with and without a
    /// remainder of 8, and output counts with and without a remainder of 4.
    /// The prefill path in several bands of outputs (one of them partial) equals it in one.
    #[test]
    fn bands_of_outputs_give_the_one_band_product() {
        let mut rng = crate::SplitMix(9);
        let (n, inp, out) = (6, 20, 23);
        let x: Vec<f32> = (0..n * inp).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let w: Vec<f16> = (0..out * inp).map(|_| f16::from_f32(rng.uniform() * 2.0 - 1.0)).collect();
        let (mut one, mut bands) = (vec![0.5f32; n * out], vec![0.5f32; n * out]);
        tiles_of(&x, &w, &mut one, n, inp, out, out * inp);
        tiles_of(&x, &w, &mut bands, n, inp, out, 5 * inp);
        for (a, b) in one.iter().zip(&bands) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    /// Every f16 bit pattern (subnormals, infinities, NaNs included) widens to `half`'s f32 value, at every
    /// length's remainder of 8.
    #[test]
    fn f16_widening_is_exact_for_every_value() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for skip in [0, 3] {
            let src = &all[skip..];
            let mut dst = vec![0f32; src.len()];
            f16::widen(src, &mut dst);
            for (h, w) in src.iter().zip(&dst) {
                let want = h.to_f32();
                assert!(want.to_bits() == w.to_bits() || (want.is_nan() && w.is_nan()), "{:#06x}", h.to_bits());
            }
        }
    }

    /// The portable loop alone (what runs without AVX2) against the f64 product.
    #[test]
    fn the_portable_dot_products_equal_the_f64_product() {
        let mut rng = crate::SplitMix(8);
        for &(n, inp, m) in &[(1, 37, 5), (3, 70, 9), (4, 8, 2)] {
            let x: Vec<f32> = (0..n * inp).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let w: Vec<bf16> = (0..m * inp).map(|_| bf16::from_f32(rng.uniform() * 2.0 - 1.0)).collect();
            let mut acc = vec![0f32; n * m];
            portable_dots(&x, &w, &mut acc, n, inp, (0, 0));
            for r in 0..n {
                for o in 0..m {
                    let dot: f64 = (0..inp).map(|i| x[r * inp + i] as f64 * w[o * inp + i].to_f64()).sum();
                    assert!((acc[r * m + o] as f64 - dot).abs() < 1e-5 * inp as f64, "{n}×{inp}×{m} ({r},{o})");
                }
            }
        }
    }

    #[test]
    fn half_products_equal_the_f64_product_of_the_widened_weights() {
        let mut rng = crate::SplitMix(7);
        let cases = [(1, 37, 70), (1, 64, 9), (2, 40, 13), (3, 300, 129), (4, 5, 1), (9, 513, 67), (17, 64, 200)];
        for &(n, inp, out) in &cases {
            let x: Vec<f32> = (0..n * inp).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let w32: Vec<f32> = (0..out * inp).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let bias: Vec<f32> = (0..out).map(|_| rng.uniform()).collect();
            let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let widened = [wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), wh.iter().map(|v| v.to_f32()).collect()];
            let got = [linear(&x, &wb, Some(&bias), inp), linear(&x, &wh, Some(&bias), inp)];
            let unbiased = [linear(&x, &wb, None, inp), linear(&x, &wh, None, inp)];
            for k in 0..2 {
                for r in 0..n {
                    for o in 0..out {
                        let terms = (0..inp).map(|i| x[r * inp + i] as f64 * widened[k][o * inp + i] as f64);
                        let dot: f64 = terms.clone().sum();
                        let tol = 1e-5 * (1.0 + terms.map(f64::abs).sum::<f64>());
                        let (g, u) = (got[k][r * out + o] as f64, unbiased[k][r * out + o] as f64);
                        let want = dot + bias[o] as f64;
                        assert!((g - want).abs() <= tol, "{n}×{inp}×{out} [{k}] ({r},{o}): {g} vs {want}");
                        assert!((u - dot).abs() <= tol, "{n}×{inp}×{out} [{k}] ({r},{o}) unbiased: {u} vs {dot}");
                    }
                }
            }
        }
    }
}
