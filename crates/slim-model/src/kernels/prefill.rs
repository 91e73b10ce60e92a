//! The prefill product of half-precision weights on AVX2 (`y = x · wᵀ (+ bias)`, x f32 `[n, inp]`, w f16 or bf16
//! `[out, inp]` as stored), without gemm: 16 weight rows × [`KC`] inputs are widened and transposed into an
//! L1-sized f32 panel (`[KC, 16]`: the 16 outputs of one input contiguous), then 6 rows of `x` at a time are
//! multiplied by it as gemm's own microkernel would (each input's 6 activations broadcast, 12 AVX2 sums of 8
//! outputs), into a row-major buffer of the sums of 128 outputs that is written to `y` (with the bias) once: `y`
//! is not zeroed or filled first, and neither are the panel and the sums (the first block of inputs stores its
//! sums, the others add to them).
//!
//! Why not the widened band through gemm (the portable path in [`super::widen`]): gemm packs the activations
//! again for every product and runs its own parallel region after the widening's; `perf` of a 128-token f16
//! prefill of SmolLM2-135M put 10.5 % of the samples in gemm's packing and driver and 5.5 % in the separate
//! widening, beside 68 % in its microkernel. Here the only copy is the panel, which is L1-sized and built in the
//! thread that uses it. Activations, sums and results stay f32. Measured against the other shapes with
//! `cargo run --release -p slim-model --example halfgemm` (docs/measurements.md).

use super::widen::avx::{available, load8};
use super::widen::Half;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Inputs of one panel: `KC × 16 × 4` bytes = 16 KiB, half of L1, with room for the 6 activation rows.
const KC: usize = 256;
/// Outputs of one panel: two AVX2 vectors.
const NP: usize = 16;
/// Rows of `x` one tile multiplies: 12 sums, 2 panel vectors and a broadcast fill 15 of the 16 registers.
const MR: usize = 6;
/// Rows of `x` a task takes: a block of them, `TB × KC × 4` = 192 KiB, stays in L2 while the panels of [`SG`]
/// outputs go over it.
const TB: usize = 192;
/// Outputs whose sums a task keeps at a time (`TB × SG × 4` = 96 KiB); a multiple of [`NP`].
const SG: usize = 128;

/// Where tasks write their disjoint parts of the result, which is not initialized before they do.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    /// Row stride (`out`).
    stride: usize,
}
// SAFETY: every task writes a disjoint block of rows × outputs (`linear`'s task grid) and reads none, and `linear`
// owns the buffer until the tasks are done.
unsafe impl Send for Out {}
// SAFETY: as for Send.
unsafe impl Sync for Out {}

/// `x · wᵀ (+ bias)`: tasks of [`TB`] rows × a chunk of outputs, in parallel when the product is large; each
/// output is written once (the buffer is not zeroed first).
///
/// # Shapes
/// x: `[n, inp]`, w: `[out, inp]`, bias: `[out]` → `[n, out]`
///
/// # Panics
/// When the CPU lacks the kernel's features (AVX2, FMA, and F16C for f16: [`available`]) or the lengths do not
/// match the shapes.
pub(super) fn linear<T: Half>(x: &[f32], w: &[T], bias: Option<&[f32]>, n: usize, inp: usize, out: usize) -> Vec<f32> {
    assert!(available::<T>(), "prefill::linear: the CPU lacks AVX2/FMA/F16C");
    assert!(x.len() == n * inp && w.len() == out * inp, "prefill::linear: shapes");
    assert!(bias.is_none_or(|b| b.len() == out), "prefill::linear: bias length");
    let mut y = Vec::<f32>::with_capacity(n * out);
    let threads = if n * out * inp >= 1 << 21 { rayon::current_num_threads().max(1) } else { 1 };
    let (chunks, blocks) = ((4 * threads).min(out.div_ceil(NP)), n.div_ceil(TB));
    let edge = |c: usize| chunk_edge(c, chunks, out);
    let dst = Out { ptr: y.as_mut_ptr(), stride: out };
    let task = |i: usize| {
        let (c, b) = (i / blocks, i % blocks);
        let (rows, outs) = (b * TB..((b + 1) * TB).min(n), edge(c)..edge(c + 1));
        // SAFETY: the CPU has the features (asserted above); the tasks' (rows, outs) blocks are disjoint and inside
        // the n × out floats of y's capacity.
        unsafe { task_block(x, w, bias, dst, inp, rows, outs) };
    };
    if threads == 1 {
        (0..chunks * blocks).for_each(task);
    } else {
        super::team::run(chunks * blocks, task);
    }
    // SAFETY: the tasks' blocks tile 0..n × 0..out (chunks cover the outputs, blocks the rows) and each wrote every
    // element of its block (`task_block`), so all n × out floats are initialized.
    unsafe { y.set_len(n * out) };
    y
}

/// Where output chunk `c` of `chunks` starts (`c = chunks`: `out`): the panels of [`NP`] outputs dealt out as
/// evenly as whole panels allow, so chunks differ by at most one panel (the last may be clipped shorter). Chunks of
/// one size rounded up to a panel, as before, made SmolLM2's 576 outputs (o_proj, down_proj) seven chunks of 80
/// and one of 16, which no split between two threads shares better than 320 against 256: 11 % above an even share.
fn chunk_edge(c: usize, chunks: usize, out: usize) -> usize {
    (c * out.div_ceil(NP) / chunks * NP).min(out)
}

/// `y[rows, outs] = x[rows, :] · w[outs, :]ᵀ (+ bias[outs])`, [`SG`] outputs at a time; writes every element of
/// the block once and reads none of y.
///
/// # Safety
/// The CPU must have AVX2, FMA (and F16C for f16); no other thread may access `y[rows, outs]` meanwhile; `x` is
/// `[n, inp]`, `w` `[out, inp]` and `bias` `[out]` with `rows` and `outs` inside them, and `dst` points to
/// `n × out` writable floats.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn task_block<T: Half>(
    x: &[f32],
    w: &[T],
    bias: Option<&[f32]>,
    dst: Out,
    inp: usize,
    rows: std::ops::Range<usize>,
    outs: std::ops::Range<usize>,
) {
    /// The panel, aligned to a cache line; written before it is read (`fill_panel`), so never zeroed.
    #[repr(align(64))]
    struct Panel([MaybeUninit<f32>; KC * NP]);
    let kmain = inp - inp % 8;
    let nrows = rows.len();
    let mut panel = Panel([MaybeUninit::uninit(); KC * NP]);
    let pw = panel.0.as_mut_ptr().cast::<f32>();
    // The sums of SG outputs, row-major with a row stride of SG: y's own stride (a multiple of 4 KiB for many models)
    // would put every row's sums in one L1 set. The outputs go SG at a time, and within them the inputs KC at a
    // time, so that a block of KC inputs of the rows (TB × KC floats) is read once per SG outputs and stays in L2
    // beside the sums. The first block of inputs stores the sums and the others add to them, so the buffer is not
    // zeroed (zeroing it for every task and every SG outputs was part of a 1.6 % `memset` in a prefill profile);
    // with fewer than 8 inputs no block runs and it is zeroed for the tail.
    let mut sums: Vec<MaybeUninit<f32>> = Vec::with_capacity(nrows * SG);
    // SAFETY: MaybeUninit needs no initialization; what is read is written first (below).
    unsafe { sums.set_len(nrows * SG) };
    let sp0 = sums.as_mut_ptr().cast::<f32>();
    for s0 in outs.clone().step_by(SG) {
        let s1 = (s0 + SG).min(outs.end);
        if kmain == 0 {
            sums.fill(MaybeUninit::new(0.0));
        }
        for k0 in (0..kmain).step_by(KC) {
            let kc = KC.min(kmain - k0);
            for g0 in (s0..s1).step_by(NP) {
                let nr = NP.min(s1 - g0);
                // SAFETY: the CPU has the features; rows g0..g0 + nr of w hold inputs k0..k0 + kc; the panel holds
                // KC × NP floats.
                unsafe { fill_panel(w, inp, g0, nr, k0, kc, pw) };
                let mut r = 0;
                while r < nrows {
                    let take = (nrows - r).min(MR);
                    // SAFETY: x's rows rows.start + r .. + take exist and hold inputs k0..k0 + kc; the panel's
                    // first kc × NP floats were just written; sums holds `take` rows of SG from row r, of which NP
                    // from g0 - s0 (g0 - s0 + NP <= SG: SG is a multiple of NP), written by the block k0 = 0 before
                    // any later block reads them.
                    unsafe {
                        let xp = x.as_ptr().add((rows.start + r) * inp + k0);
                        let sp = sp0.add(r * SG + g0 - s0);
                        match (take, k0 == 0) {
                            (6, true) => tile::<6, true>(xp, inp, pw, kc, sp, SG),
                            (6, false) => tile::<6, false>(xp, inp, pw, kc, sp, SG),
                            (5, true) => tile::<5, true>(xp, inp, pw, kc, sp, SG),
                            (5, false) => tile::<5, false>(xp, inp, pw, kc, sp, SG),
                            (4, true) => tile::<4, true>(xp, inp, pw, kc, sp, SG),
                            (4, false) => tile::<4, false>(xp, inp, pw, kc, sp, SG),
                            (3, true) => tile::<3, true>(xp, inp, pw, kc, sp, SG),
                            (3, false) => tile::<3, false>(xp, inp, pw, kc, sp, SG),
                            (2, true) => tile::<2, true>(xp, inp, pw, kc, sp, SG),
                            (2, false) => tile::<2, false>(xp, inp, pw, kc, sp, SG),
                            (_, true) => tile::<1, true>(xp, inp, pw, kc, sp, SG),
                            (_, false) => tile::<1, false>(xp, inp, pw, kc, sp, SG),
                        }
                    }
                    r += take;
                }
            }
        }
        // The inputs past the last multiple of 8, then the sums into y.
        for (i, row) in rows.clone().enumerate() {
            // SAFETY: the first s1 - s0 sums of row i were written above: by the block k0 = 0, whose panels cover
            // s0..s1 in whole panels of NP, or by the fill when there is no block.
            let s = unsafe { std::slice::from_raw_parts_mut(sp0.add(i * SG), s1 - s0) };
            if kmain < inp {
                let xr = &x[row * inp + kmain..(row + 1) * inp];
                for (o, acc) in (s0..s1).zip(s.iter_mut()) {
                    let mut tail = [0f32; 8];
                    T::widen(&w[o * inp + kmain..(o + 1) * inp], &mut tail[..inp - kmain]);
                    *acc += xr.iter().zip(&tail).map(|(a, b)| a * b).sum::<f32>();
                }
            }
            for (j, v) in s.iter().enumerate() {
                let v = v + bias.map_or(0.0, |b| b[s0 + j]);
                // SAFETY: row < n and s0 + j < s1 <= outs.end <= out: inside y's n × out floats, and this task's
                // alone; written, never read.
                unsafe { dst.ptr.add(row * dst.stride + s0 + j).write(v) };
            }
        }
    }
}

/// `panel[k, j] = w[g0 + j, k0 + k]` in f32 for `k < kc` and `j < NP` (zero for `j >= nr`): 8 × 8 blocks
/// widened and transposed in registers.
///
/// # Safety
/// The CPU must have AVX2 (and F16C for f16); rows `g0..g0 + nr` of `w` (`[_, inp]`) hold inputs `k0..k0 + kc`,
/// `kc` is a multiple of 8 and at most [`KC`]; `panel` points to `KC × NP` writable floats.
#[inline(always)]
unsafe fn fill_panel<T: Half>(w: &[T], inp: usize, g0: usize, nr: usize, k0: usize, kc: usize, panel: *mut f32) {
    debug_assert!(kc.is_multiple_of(8) && kc <= KC && (g0 + nr) * inp <= w.len() && k0 + kc <= inp);
    for half in 0..NP / 8 {
        for kk in (0..kc).step_by(8) {
            // SAFETY: the CPU has AVX (the caller vouches).
            let mut rows = [unsafe { _mm256_setzero_ps() }; 8];
            for (j, v) in rows.iter_mut().enumerate() {
                let o = half * 8 + j;
                if o < nr {
                    // SAFETY: row g0 + o of w holds inputs k0 + kk .. + 8 (k0 + kc <= inp).
                    *v = unsafe { load8(w.as_ptr().add((g0 + o) * inp + k0 + kk)) };
                }
            }
            // SAFETY: (kk + 7) × NP + half × 8 + 8 <= kc × NP <= the panel's length.
            unsafe {
                for (q, v) in transpose8(rows).iter().enumerate() {
                    _mm256_storeu_ps(panel.add((kk + q) * NP + half * 8), *v);
                }
            }
        }
    }
}

/// The 8 × 8 transpose of 8 vectors (`out[i][j] = r[j][i]`).
///
/// # Safety
/// The CPU must have AVX.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: shuffles of registers only, with AVX (the caller vouches).
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

/// `sums[r, 0..NP] += x[r, 0..kc] · panel[0..kc, 0..NP]` for `R` rows (`sums` rows `ss` floats apart); with
/// `STORE`, `=` instead of `+=` (sums not read).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` has `R` rows of at least `kc` floats at stride `xs`, `panel` `kc × NP`
/// floats, `sums` `R` rows of `NP` floats (initialized unless `STORE`), `ss` apart.
#[inline(always)]
unsafe fn tile<const R: usize, const STORE: bool>(
    x: *const f32,
    xs: usize,
    panel: *const f32,
    kc: usize,
    sums: *mut f32,
    ss: usize,
) {
    // SAFETY: every access is inside the regions the caller vouches for.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for k in 0..kc {
            let w0 = _mm256_loadu_ps(panel.add(k * NP));
            let w1 = _mm256_loadu_ps(panel.add(k * NP + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let xb = _mm256_broadcast_ss(&*x.add(r * xs + k));
                a[0] = _mm256_fmadd_ps(xb, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xb, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let sp = sums.add(r * ss);
            if STORE {
                _mm256_storeu_ps(sp, a[0]);
                _mm256_storeu_ps(sp.add(8), a[1]);
            } else {
                _mm256_storeu_ps(sp, _mm256_add_ps(_mm256_loadu_ps(sp), a[0]));
                _mm256_storeu_ps(sp.add(8), _mm256_add_ps(_mm256_loadu_ps(sp.add(8)), a[1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Output chunks tile `0..out` in whole panels (the last one clipped), each non-empty and within a panel
    /// of the others, for the widths of the models here (SmolLM2's 576, 960 and 3,072, Qwen2.5-1.5B's) and odd ones.
    #[test]
    fn output_chunks_are_whole_panels_of_nearly_equal_size() {
        for out in [1usize, 15, 16, 17, 100, 192, 576, 960, 1126, 1536, 2048, 3072, 17920] {
            for threads in 1..=5 {
                let chunks = (4 * threads).min(out.div_ceil(NP));
                let edges: Vec<usize> = (0..=chunks).map(|c| chunk_edge(c, chunks, out)).collect();
                assert_eq!((edges[0], edges[chunks]), (0, out), "out {out}, {threads} threads");
                let sizes: Vec<usize> = edges.windows(2).map(|e| e[1] - e[0]).collect();
                assert!(edges[..chunks].iter().all(|e| e % NP == 0), "out {out}: edges {edges:?}");
                let whole = &sizes[..chunks - usize::from(out % NP != 0)];
                let (lo, hi) = (whole.iter().min().unwrap_or(&NP), whole.iter().max().unwrap_or(&NP));
                assert!(sizes.iter().all(|&s| s > 0) && hi - lo <= NP, "out {out}, {threads} threads: {sizes:?}");
            }
        }
    }

    /// Against an f64 product of the widened weights, for both element types, on shapes that take every
    /// remainder: rows not a multiple of [`MR`] or of [`TB`], outputs not a multiple of [`NP`], inputs not
    /// a multiple of 8 or of [`KC`], output chunks wider than [`SG`] (the last shape), and products above and below
    /// the parallel threshold.
    #[test]
    fn the_prefill_kernel_equals_the_f64_product() {
        assert!(available::<f16>(), "this test needs a CPU with AVX2, FMA and F16C (the machines here have them)");
        let mut rng = crate::SplitMix(11);
        // Fewer than 8 inputs (no block of inputs: the sums zeroed for the tail), several groups of SG outputs in
        // one task, row counts that are not multiples of MR.
        let shapes = [
            (5, 8, 4),
            (7, 37, 13),
            (200, 300, 70),
            (193, 520, 131),
            (9, 1030, 67),
            (3, 16, 1),
            (13, 264, 1100),
            (4, 5, 20),
            (3, 5, 700),
        ];
        for &(n, inp, out) in &shapes {
            let x: Vec<f32> = (0..n * inp).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let w32: Vec<f32> = (0..out * inp).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let bias: Vec<f32> = (0..out).map(|_| rng.uniform()).collect();
            let (wide_b, wide_h): (Vec<f64>, Vec<f64>) =
                (wb.iter().map(|v| v.to_f64()).collect(), wh.iter().map(|v| v.to_f64()).collect());
            // The portable path (widened bands through gemm, accumulating into y) on the same operands.
            let (mut tb, mut th) = (vec![0f32; n * out], vec![0f32; n * out]);
            super::super::widen::tiles(&x, &wb, &mut tb, n, inp, out);
            super::super::widen::tiles(&x, &wh, &mut th, n, inp, out);
            let cases = [
                (linear(&x, &wb, Some(&bias), n, inp, out), &wide_b, true),
                (linear(&x, &wh, Some(&bias), n, inp, out), &wide_h, true),
                (linear(&x, &wh, None, n, inp, out), &wide_h, false),
                (tb, &wide_b, false),
                (th, &wide_h, false),
            ];
            for (k, (y, wide, biased)) in cases.iter().enumerate() {
                assert_eq!(y.len(), n * out);
                for r in 0..n {
                    for o in 0..out {
                        let terms = (0..inp).map(|i| x[r * inp + i] as f64 * wide[o * inp + i]);
                        let want = if *biased { bias[o] as f64 } else { 0.0 } + terms.clone().sum::<f64>();
                        let tol = 1e-5 * (1.0 + terms.map(f64::abs).sum::<f64>());
                        let got = y[r * out + o] as f64;
                        assert!((got - want).abs() <= tol, "{n}×{inp}×{out} [{k}] ({r},{o}): {got} vs {want}");
                    }
                }
            }
        }
    }
}
