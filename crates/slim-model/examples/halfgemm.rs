//! The experiment behind `slim_model`'s AVX2 prefill kernel (src/kernels/prefill.rs; measured in
//! docs/measurements.md, "Half-precision weights for decoding"): the prefill product of f16
//! weights and f32 activations three ways, on SmolLM2-135M's and Qwen2.5-1.5B's shapes at 128
//! tokens:
//! - band + gemm: the weight widened to f32, then gemm (which packs the activations again), the
//!   runtime's path before the kernel and its portable path since;
//! - panel: 16 weight rows × 256 inputs widened and transposed into an L1 panel, multiplied by 6
//!   activation rows at a time with broadcasts (gemm's microkernel shape, nothing else packed);
//!   the kernel the runtime adopted;
//! - dot-form: 16 weight rows × 256 inputs widened into L1, multiplied by 3 activation rows as
//!   3 × 4 dot products reduced by `hadd` (llama.cpp's tinyBLAS shape), which was no faster than
//!   band + gemm inside a whole prefill.
//!
//! Prints GFLOP/s of each (the best of 5 timings) and the largest difference of the other two
//! from band + gemm. Run (x86_64 with AVX2, FMA and F16C):
//! `RAYON_NUM_THREADS=T cargo run --release -p slim-model --example halfgemm`.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]
use half::f16;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::time::Instant;

/// Dot-form: inputs and weight rows widened into L1 at a time.
const KC: usize = 256;
const WB: usize = 16;

fn widen(src: &[f16], dst: &mut [f32]) {
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
}

/// The runtime's portable path: the whole weight widened, then gemm (`y += x · wᵀ`).
fn band_gemm(x: &[f32], w: &[f16], y: &mut [f32], n: usize, inp: usize, out: usize, buf: &mut Vec<f32>) {
    buf.resize(out * inp, 0.0);
    buf.par_chunks_mut(inp).zip(w.par_chunks(inp)).for_each(|(d, s)| widen(s, d));
    unsafe {
        gemm::gemm(
            n,
            out,
            inp,
            y.as_mut_ptr(),
            1,
            out as isize,
            true,
            x.as_ptr(),
            1,
            inp as isize,
            buf.as_ptr(),
            inp as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// The result, written by tasks in disjoint column ranges.
#[derive(Clone, Copy)]
struct P(*mut f32);
unsafe impl Send for P {}
unsafe impl Sync for P {}

#[inline(always)]
unsafe fn reduce4(a: [__m256; 4]) -> __m128 {
    unsafe {
        let h1 = _mm256_hadd_ps(a[0], a[1]);
        let h2 = _mm256_hadd_ps(a[2], a[3]);
        let h = _mm256_hadd_ps(h1, h2);
        _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))
    }
}

/// y[r, 0..4] += x[r, 0..kc] · wb[j, 0..kc] for MR rows; wb is 4 × kc contiguous (kc multiple of 8).
#[inline(always)]
unsafe fn micro<const MR: usize>(
    x: *const f32,
    xs: usize,
    wb: *const f32,
    kc: usize,
    y: *mut f32,
    ys: usize,
    nr: usize,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; MR];
        let mut k = 0;
        while k < kc {
            let mut xv = [_mm256_setzero_ps(); MR];
            for r in 0..MR {
                xv[r] = _mm256_loadu_ps(x.add(r * xs + k));
            }
            for j in 0..4 {
                let wv = _mm256_loadu_ps(wb.add(j * kc + k));
                for r in 0..MR {
                    acc[r][j] = _mm256_fmadd_ps(xv[r], wv, acc[r][j]);
                }
            }
            k += 8;
        }
        for r in 0..MR {
            let s = reduce4(acc[r]);
            let yp = y.add(r * ys);
            if nr == 4 {
                _mm_storeu_ps(yp, _mm_add_ps(_mm_loadu_ps(yp), s));
            } else {
                let mut t = [0f32; 4];
                _mm_storeu_ps(t.as_mut_ptr(), s);
                for j in 0..nr {
                    *yp.add(j) += t[j];
                }
            }
        }
    }
}

/// Dot-form: outputs whose sums a chunk keeps in its own row-major buffer.
const NB: usize = 64;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block(x: &[f32], w: &[f16], y: P, n: usize, inp: usize, out: usize, o0: usize, o1: usize) {
    let kmain = inp - inp % 8;
    #[repr(align(64))]
    struct A([f32; WB * KC]);
    let mut wba = A([0f32; WB * KC]);
    let wb = &mut wba.0;
    let mut yt = vec![0f32; n * NB];
    for g0 in (o0..o1).step_by(NB) {
        let g1 = (g0 + NB).min(o1);
        yt.fill(0.0);
        for k0 in (0..kmain).step_by(KC) {
            let kc = KC.min(kmain - k0);
            for ob in (g0..g1).step_by(WB) {
                let nw = WB.min(g1 - ob);
                for j in 0..WB.min(nw.div_ceil(4) * 4) {
                    if j < nw {
                        let s = &w[(ob + j) * inp + k0..(ob + j) * inp + k0 + kc];
                        let mut i = 0;
                        while i < kc {
                            unsafe {
                                let h = _mm_loadu_si128(s.as_ptr().add(i).cast());
                                _mm256_storeu_ps(wb.as_mut_ptr().add(j * kc + i), _mm256_cvtph_ps(h));
                            }
                            i += 8;
                        }
                    } else {
                        wb[j * kc..(j + 1) * kc].fill(0.0);
                    }
                }
                let yb = unsafe { yt.as_mut_ptr().add(ob - g0) };
                let mut r = 0;
                unsafe {
                    while r < n {
                        let xr = x.as_ptr().add(r * inp + k0);
                        let rows = (n - r).min(3);
                        for b in (0..nw).step_by(4) {
                            let nr = 4.min(nw - b);
                            let (wp, yp) = (wb.as_ptr().add(b * kc), yb.add(r * NB + b));
                            match rows {
                                3 => micro::<3>(xr, inp, wp, kc, yp, NB, nr),
                                2 => micro::<2>(xr, inp, wp, kc, yp, NB, nr),
                                _ => micro::<1>(xr, inp, wp, kc, yp, NB, nr),
                            }
                        }
                        r += rows;
                    }
                }
            }
        }
        for o in g0..g1 {
            for r in 0..n {
                let mut s = 0f32;
                for i in kmain..inp {
                    s += x[r * inp + i] * w[o * inp + i].to_f32();
                }
                yt[r * NB + o - g0] += s;
            }
        }
        for r in 0..n {
            for (j, v) in yt[r * NB..r * NB + g1 - g0].iter().enumerate() {
                unsafe { *y.0.add(r * out + g0 + j) += v };
            }
        }
    }
}

/// 8 × 8 transpose of f32 vectors.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
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

/// Panel: inputs of one `[PK, 16]` panel.
const PK: usize = 256;

/// acc tile of R rows × 16 outputs over the panel's kc inputs; y[r, 0..nr] += acc.
#[inline(always)]
unsafe fn ptile<const R: usize>(x: *const f32, xs: usize, p: *const f32, kc: usize, y: *mut f32, ys: usize, nr: usize) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for k in 0..kc {
            let w0 = _mm256_loadu_ps(p.add(k * 16));
            let w1 = _mm256_loadu_ps(p.add(k * 16 + 8));
            for r in 0..R {
                let xb = _mm256_broadcast_ss(&*x.add(r * xs + k));
                acc[r][0] = _mm256_fmadd_ps(xb, w0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(xb, w1, acc[r][1]);
            }
        }
        for r in 0..R {
            let yp = y.add(r * ys);
            if nr == 16 {
                _mm256_storeu_ps(yp, _mm256_add_ps(_mm256_loadu_ps(yp), acc[r][0]));
                _mm256_storeu_ps(yp.add(8), _mm256_add_ps(_mm256_loadu_ps(yp.add(8)), acc[r][1]));
            } else {
                let mut t = [0f32; 16];
                _mm256_storeu_ps(t.as_mut_ptr(), acc[r][0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), acc[r][1]);
                for j in 0..nr {
                    *yp.add(j) += t[j];
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pblock(x: &[f32], w: &[f16], y: P, n: usize, inp: usize, out: usize, o0: usize, o1: usize) {
    let kmain = inp - inp % 8;
    #[repr(align(64))]
    struct A([f32; 16 * PK]);
    let mut pa = A([0f32; 16 * PK]);
    let panel = &mut pa.0;
    let mut sums = vec![0f32; n * 16];
    for g0 in (o0..o1).step_by(16) {
        let nr = 16.min(o1 - g0);
        sums.fill(0.0);
        for k0 in (0..kmain).step_by(PK) {
            let kc = PK.min(kmain - k0);
            for half in 0..2 {
                for kk in (0..kc).step_by(8) {
                    let mut rows = [_mm256_setzero_ps(); 8];
                    for j in 0..8 {
                        let o = g0 + half * 8 + j;
                        if o < g0 + nr {
                            unsafe {
                                let h = _mm_loadu_si128(w.as_ptr().add(o * inp + k0 + kk).cast());
                                rows[j] = _mm256_cvtph_ps(h);
                            }
                        }
                    }
                    let t = unsafe { transpose8(rows) };
                    for (q, v) in t.iter().enumerate() {
                        unsafe { _mm256_storeu_ps(panel.as_mut_ptr().add((kk + q) * 16 + half * 8), *v) };
                    }
                }
            }
            let mut r = 0;
            while r < n {
                let take = (n - r).min(6);
                unsafe {
                    let xp = x.as_ptr().add(r * inp + k0);
                    let yp = sums.as_mut_ptr().add(r * 16);
                    let pp = panel.as_ptr();
                    match take {
                        6 => ptile::<6>(xp, inp, pp, kc, yp, 16, 16),
                        5 => ptile::<5>(xp, inp, pp, kc, yp, 16, 16),
                        4 => ptile::<4>(xp, inp, pp, kc, yp, 16, 16),
                        3 => ptile::<3>(xp, inp, pp, kc, yp, 16, 16),
                        2 => ptile::<2>(xp, inp, pp, kc, yp, 16, 16),
                        _ => ptile::<1>(xp, inp, pp, kc, yp, 16, 16),
                    }
                }
                r += take;
            }
        }
        for o in g0..g0 + nr {
            for r in 0..n {
                let mut s = 0f32;
                for i in kmain..inp {
                    s += x[r * inp + i] * w[o * inp + i].to_f32();
                }
                sums[r * 16 + o - g0] += s;
            }
        }
        for r in 0..n {
            for j in 0..nr {
                unsafe { *y.0.add(r * out + g0 + j) += sums[r * 16 + j] };
            }
        }
    }
}

/// The panel kernel over column chunks in parallel (`y += x · wᵀ`).
fn panelform(x: &[f32], w: &[f16], y: &mut [f32], n: usize, inp: usize, out: usize) {
    let threads = rayon::current_num_threads();
    let chunk = out.div_ceil(threads * 4).next_multiple_of(16).max(16);
    let yp = P(y.as_mut_ptr());
    (0..out.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let (o0, o1) = (c * chunk, ((c + 1) * chunk).min(out));
        unsafe { pblock(x, w, yp, n, inp, out, o0, o1) };
    });
}

/// The dot-form kernel over column chunks in parallel (`y += x · wᵀ`).
fn dotform(x: &[f32], w: &[f16], y: &mut [f32], n: usize, inp: usize, out: usize) {
    let threads = rayon::current_num_threads();
    let chunk = (out.div_ceil(threads * 4) * 4).max(4);
    let yp = P(y.as_mut_ptr());
    (0..out.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let (o0, o1) = (c * chunk, ((c + 1) * chunk).min(out));
        unsafe { block(x, w, yp, n, inp, out, o0, o1) };
    });
}

fn main() {
    let mut s = 1u64;
    let mut rnd = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    // SmolLM2-135M's q/k/v, gate/up and down products at 128 tokens, Qwen2.5-1.5B's, and an odd one.
    let shapes = [(128usize, 576usize, 960usize), (128, 576, 3072), (128, 1536, 576)];
    let shapes = shapes.into_iter().chain([(128, 1536, 1536), (128, 1536, 8960), (128, 8960, 1536), (7, 37, 13)]);
    for (n, inp, out) in shapes {
        let x: Vec<f32> = (0..n * inp).map(|_| rnd()).collect();
        let w: Vec<f16> = (0..out * inp).map(|_| f16::from_f32(rnd())).collect();
        let (mut y1, mut y2, mut y3) = (vec![0f32; n * out], vec![0f32; n * out], vec![0f32; n * out]);
        let mut buf = Vec::new();
        band_gemm(&x, &w, &mut y1, n, inp, out, &mut buf);
        dotform(&x, &w, &mut y2, n, inp, out);
        panelform(&x, &w, &mut y3, n, inp, out);
        let err3 = y1.iter().zip(&y3).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let err = y1.iter().zip(&y2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let flop = 2.0 * (n * inp * out) as f64;
        let reps = (2e10 / flop).clamp(3.0, 2000.0) as usize;
        let (mut ta, mut tb, mut tc) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                band_gemm(&x, &w, &mut y1, n, inp, out, &mut buf);
            }
            ta = ta.min(t.elapsed().as_secs_f64() / reps as f64);
            let t = Instant::now();
            for _ in 0..reps {
                dotform(&x, &w, &mut y2, n, inp, out);
            }
            tb = tb.min(t.elapsed().as_secs_f64() / reps as f64);
            let t = Instant::now();
            for _ in 0..reps {
                panelform(&x, &w, &mut y3, n, inp, out);
            }
            tc = tc.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{n}x{inp}x{out}: band+gemm {:.1}, panel {:.1}, dot-form {:.1} GFLOP/s, max diff {err:.2e} {err3:.2e}",
            flop / ta / 1e9,
            flop / tc / 1e9,
            flop / tb / 1e9
        );
    }
}
