//! Checks that run before any long step: whether a job's sizes fit in the memory the machine has, whether its
//! lengths fit the model's context, and parsers that reject bad numbers with the option's name.
//!
//! Why: sizes that cannot fit used to abort with an allocation failure (exit 134) after minutes of loading and
//! tokenizing. Every command now estimates its peak from the model's `config.json` (no weights read) and refuses up
//! front, naming the options, the bytes and the memory available.
//!
//! How to use it from a command (the pipeline's calibration pass does the same with its window count and length):
//!
//! ```ignore
//! let cfg = ModelConfig::load(&model_dir)?;
//! let fp = Footprint::new(&cfg, backend);
//! check_positions(&cfg, t, &format!("--calib-len {t}"))?;
//! check_fits(&format!("--calib-batch {b} × --calib-len {t}"), fp.peak_in(WeightDtype::F32, fp.forward(b, t)))?;
//! ```
//!
//! What the estimate counts (f32 everywhere, as the runtime holds every tensor), see [`Footprint`]: the process's
//! base (binary, tokenizer, text); the weights as the runtime keeps them (a tied embedding twice: once for the
//! lookup, once transposed as the lm_head); the load's transient host copies (one tensor's at a time, the lm_head's
//! table the largest, kept committed by the allocator for a while after loading); and per pass the
//! logits `batch × len × vocab`, the largest layer's activations with its attention scores (`len × kv_len` per
//! head, one head per thread at a time), and the KV cache (`2 × layers × batch × positions × kv_width`, plus the
//! copy `cat` makes while appending). Measured against peak RSS on SmolLM2-135M in docs/reliability.md ("Sizes
//! that cannot fit"): above the measured peak by 4 to 16 %.
//!
//! On the GPU backends only the host's share is checked (the load's host copies, the logits read back); the
//! device's memory is not known here.

use anyhow::{bail, Result};
use slim_checkpoint::{ModelConfig, WeightDtype};
use slim_model::BackendKind;

/// Environment variable that overrides the available memory (bytes, or with a K, M, G or T suffix, powers of 1024):
/// for tests, and for machines whose `/proc/meminfo` does not tell.
pub(crate) const MEM_ENV: &str = "SLIMLLM_MEM_AVAILABLE";

/// What is assumed when neither the environment nor `/proc/meminfo` says (8 GiB).
const FALLBACK_BYTES: u64 = 8 << 30;

/// Positions past which RoPE's angles (`position × inverse frequency`, in f32 as in HF) are no longer exact.
pub(crate) const MAX_EXACT_POSITION: usize = 1 << 24;

/// Memory a job may use, and where the figure comes from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Memory {
    pub(crate) bytes: u64,
    pub(crate) source: String,
}

/// The memory available now: [`MEM_ENV`] when set; else `MemAvailable` of `/proc/meminfo`, lowered to the
/// cgroup's remaining limit (`memory.max − memory.current`) when a container sets one; else 8 GiB, said so.
pub(crate) fn available_memory() -> Memory {
    if let Some(v) = std::env::var_os(MEM_ENV) {
        let v = v.to_string_lossy();
        match parse_bytes(&v) {
            Some(bytes) => return Memory { bytes, source: format!("{MEM_ENV}={v}") },
            None => tracing::warn!("{MEM_ENV}={v} is not a byte count; ignored"),
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| meminfo_available(&t));
    let cgroup = cgroup_remaining(
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().as_deref(),
        std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok().as_deref(),
    );
    match (meminfo, cgroup) {
        (Some(m), Some(c)) if c < m => Memory { bytes: c, source: "the cgroup's memory.max − memory.current".into() },
        (Some(m), _) => Memory { bytes: m, source: "MemAvailable in /proc/meminfo".into() },
        (None, Some(c)) => Memory { bytes: c, source: "the cgroup's memory.max − memory.current".into() },
        (None, None) => Memory {
            bytes: FALLBACK_BYTES,
            source: format!("assumed: /proc/meminfo is unreadable; set {MEM_ENV} to say how much there is"),
        },
    }
}

/// Fails when `bytes` exceed the available memory, naming `what` (the options that set the size, with their values).
pub(crate) fn check_fits(what: &str, bytes: u64) -> Result<()> {
    check_fits_in(what, bytes, &available_memory())
}

/// [`check_fits`] against a given amount of memory.
pub(crate) fn check_fits_in(what: &str, bytes: u64, mem: &Memory) -> Result<()> {
    if bytes > mem.bytes {
        bail!(
            "{what} would need about {} of memory at its peak ({bytes} bytes, estimated), but {} is available ({}); \
             choose smaller sizes",
            human(bytes),
            human(mem.bytes),
            mem.source
        );
    }
    tracing::debug!("{what}: about {} ({bytes} bytes) of {} available", human(bytes), human(mem.bytes));
    Ok(())
}

/// Warns when `positions` exceed the model's context (`max_position_embeddings`): RoPE computes the angles of any
/// position, but the model never saw them in training, so its outputs there mean little. Fails past
/// [`MAX_EXACT_POSITION`], where f32 angles stop being exact.
pub(crate) fn check_positions(cfg: &ModelConfig, positions: usize, what: &str) -> Result<()> {
    if positions > MAX_EXACT_POSITION {
        bail!("{what} asks for {positions} positions; RoPE's f32 angles are exact only up to {MAX_EXACT_POSITION}");
    }
    if positions > cfg.max_position_embeddings {
        tracing::warn!(
            "{what} reaches position {positions}, past the model's context of {} (max_position_embeddings): \
             RoPE extrapolates and the results mean little",
            cfg.max_position_embeddings
        );
    }
    Ok(())
}

/// Byte counts of one model's jobs on one backend, from its config alone.
pub(crate) struct Footprint<'a> {
    cfg: &'a ModelConfig,
    /// True when the tensors live in host memory (the CPU backend).
    host: bool,
    /// Attention heads computed at once on the CPU backend (one per thread).
    threads: u64,
}

const F32: u64 = 4;

/// The process before any model: the binary, a tokenizer, the text and its ids (measured: `slimllm tokenize` of
/// PTB-valid with SmolLM2's tokenizer peaks at 110 MiB).
const PROCESS_BASE: u64 = 128 << 20;

impl<'a> Footprint<'a> {
    /// The footprint of a model whose config is `cfg` on `backend`.
    pub(crate) fn new(cfg: &'a ModelConfig, backend: BackendKind) -> Self {
        Self { cfg, host: backend == BackendKind::Cpu, threads: rayon::current_num_threads().max(1) as u64 }
    }

    /// Peak bytes of a job that loads the whole model with its projections' and lm_head's weights kept in `dtype`
    /// (`Llama::load_in`, one tensor's f32 host copy at a time) and then needs `pass` bytes beyond them: the
    /// process's base, the resident weights ([`Footprint::resident_in`]), the load's transient host copies in f32
    /// (the lm_head's table, read and then transposed or narrowed, and the largest of a layer and the table once
    /// more: freed, but kept committed by the allocator for 10 s, main.rs's purge delay, while the first passes
    /// run) and the pass. Measured 2026-12-06, `eval ppl --windows 8 --weights W` (batch 8 × 128): a test keeps
    /// the estimate above the peaks and within 30 % of them.
    pub(crate) fn peak_in(&self, dtype: WeightDtype, pass: u64) -> u64 {
        let c = self.cfg;
        let table = (c.vocab_size as u64) * c.hidden_size as u64;
        let layer = self.largest_layer_params();
        let transient = F32.saturating_mul(table.saturating_add(table.max(layer)));
        PROCESS_BASE.saturating_add(self.resident_in(dtype)).saturating_add(transient).saturating_add(pass)
    }

    /// Parameters of the model's largest decoder layer (pruned layers differ).
    fn largest_layer_params(&self) -> u64 {
        (0..self.cfg.num_layers()).map(|l| self.cfg.layer_params(l)).max().unwrap_or(0)
    }

    /// The weights as `Llama::load_in` holds them with the projections and the lm_head in `dtype`: the embedding in
    /// f32, every other parameter in `dtype` (norms and biases are f32, a rounding error here), and a tied lm_head
    /// a second time. Zero host bytes on a GPU backend.
    pub(crate) fn resident_in(&self, dtype: WeightDtype) -> u64 {
        if !self.host {
            return 0;
        }
        if dtype == WeightDtype::F32 {
            return self.resident();
        }
        let c = self.cfg;
        let table = (c.vocab_size * c.hidden_size) as u64;
        let tied = if c.tie_word_embeddings { table } else { 0 };
        let rest = c.num_params().saturating_sub(table).saturating_add(tied);
        (F32 * table).saturating_add((dtype.to_fs().size() as u64).saturating_mul(rest))
    }

    /// The weights as the runtime holds them, in f32: every parameter, and a tied embedding a second time (the
    /// lm_head keeps its own transposed copy). Zero host bytes on a GPU backend.
    pub(crate) fn resident(&self) -> u64 {
        if !self.host {
            return 0;
        }
        let c = self.cfg;
        let tied = if c.tie_word_embeddings { (c.vocab_size * c.hidden_size) as u64 } else { 0 };
        F32.saturating_mul(c.num_params().saturating_add(tied))
    }

    /// Peak bytes of a pass that holds one decoder layer at a time (`eval ppl`, `slim_eval::perplexity_streamed`):
    /// the process's base; the largest weights held at once, either a layer read from the files (its host copy
    /// in f32 beside the runtime's) or the embedding / the lm_head with its transposed copy; the hidden states of
    /// a group of `windows` windows of `len` tokens (at most about `STREAM_ACTIVATION_BYTES`); and one batch's
    /// pass.
    pub(crate) fn streamed(&self, batch: usize, len: usize, windows: usize) -> u64 {
        let per_window = F32 * (len as u64) * self.cfg.hidden_size as u64;
        let hidden = self.streamed_hidden(per_window.saturating_mul(windows as u64), per_window * batch as u64);
        self.streamed_peak(hidden, self.forward(batch, len))
    }

    /// Peak bytes of a pass that holds one decoder layer at a time, with `hidden` bytes of hidden states held
    /// across the layers and `pass` bytes for its largest batch: the process's base, the largest weights held at
    /// once (a layer read from the files, its host copy in f32 beside the runtime's, or the embedding / the
    /// lm_head with its transposed copy), the hidden states and the pass.
    pub(crate) fn streamed_peak(&self, hidden: u64, pass: u64) -> u64 {
        let c = self.cfg;
        let layer = self.largest_layer_params();
        let table = (c.vocab_size as u64) * c.hidden_size as u64;
        let weights = F32.saturating_mul((2 * layer).max(3 * table));
        PROCESS_BASE.saturating_add(weights).saturating_add(hidden).saturating_add(pass)
    }

    /// Hidden states a streamed pass holds: all of them (`total` bytes) or, when that exceeds
    /// `slim_eval::STREAM_ACTIVATION_BYTES`, a group of at most that many, or of one batch (`batch` bytes) if larger.
    pub(crate) fn streamed_hidden(&self, total: u64, batch: u64) -> u64 {
        total.min((slim_eval::STREAM_ACTIVATION_BYTES as u64).max(batch))
    }

    /// [`Footprint::cached_pass`] of a pass that holds one layer's keys and values (the largest layer's) instead
    /// of every layer's: a streamed pass builds each layer's cache while that layer runs and drops it after.
    pub(crate) fn cached_layer_pass(&self, batch: usize, past: usize, new: usize, logit_positions: usize) -> u64 {
        self.layer_kv_cache(batch, past.saturating_add(new)).saturating_add(self.pass(
            batch,
            past,
            new,
            logit_positions,
            false,
        ))
    }

    /// The keys and values of the widest layer for `batch` sequences of `positions`, in f32.
    pub(crate) fn layer_kv_cache(&self, batch: usize, positions: usize) -> u64 {
        if !self.host {
            return 0;
        }
        let width = self.cfg.layers.iter().map(|l| (2 * l.num_kv_heads * self.cfg.head_dim) as u64).max().unwrap_or(0);
        F32.saturating_mul(width).saturating_mul(batch as u64).saturating_mul(positions as u64)
    }

    /// Peak bytes of `pipeline run` on `windows` calibration windows of `len` tokens, which works one decoder layer
    /// at a time (`slim_pipeline::layers`): the process's base, the calibration activations carried from layer to
    /// layer (the input and its clone for a capture, and the attention's output kept for moving on), and the
    /// largest of its phases, each with what it holds at once (f32 unless said):
    /// - the embedding: the table on the device, with its host copy and the lookup's copy;
    /// - the attention's capture and score: the dense layer on the device, the attention's host weights, its
    ///   statistics (the o_proj input's `(H·d_h)²` covariance and the `d × H × H` head covariances in f64, the
    ///   head chunks, `slim_capture::P_CHUNK_BYTES` twice at most) and one layer's pass over all windows;
    /// - the MLP's capture: the layer on the device, the attention's host weights, the `f × f` covariance on the
    ///   device and on the host, and the pass;
    /// - the MLP's score and refit: the MLP's host weights, the covariance, the channel score's f64 `d × d`
    ///   scatter with its eigenvectors and workspace, and its three 1,024-wide f64 bands; with the least-squares
    ///   refit (`lstsq`), the covariance widened to f64, its kept block and that block's factor, `W_down` in f64
    ///   and its products;
    /// - the surgery and the move to the next layer: the host layer and its pruned copy on the device, and a pass.
    ///
    /// With the Taylor scorer, also every layer's input (its gradient pass keeps them) and a chunk's logits.
    /// Measured peak RSS against this estimate (docs/measurements.md, 2026-12-05): see the tests below.
    pub(crate) fn pipeline(&self, windows: usize, len: usize, taylor: bool, lstsq: bool) -> u64 {
        let c = self.cfg;
        let (d, dh) = (c.hidden_size as u64, c.head_dim as u64);
        let max_of = |g: &dyn Fn(usize) -> u64| (0..c.num_layers()).map(g).max().unwrap_or(0);
        let f = max_of(&|l| c.layers[l].intermediate_size as u64);
        let qw = max_of(&|l| c.layers[l].num_heads as u64 * dh);
        let heads = max_of(&|l| c.layers[l].num_heads as u64);
        let layer = F32.saturating_mul(max_of(&|l| c.layer_params(l)));
        let mlp = F32.saturating_mul(max_of(&|l| 3 * d * c.layers[l].intermediate_size as u64));
        let attn = F32.saturating_mul(max_of(&|l| {
            c.layer_params(l).saturating_sub(3 * d * c.layers[l].intermediate_size as u64)
        }));
        let table = F32.saturating_mul((c.vocab_size as u64).saturating_mul(d));
        let act = F32.saturating_mul(windows as u64).saturating_mul(len as u64).saturating_mul(d);
        let square = |bytes: u64, w: u64| bytes.saturating_mul(w.saturating_mul(w));
        let pass = self.layers_only(windows, len);
        // The attention capture's head chunks (`attn_stats`): whole heads of d × H·d_h values, at most
        // P_CHUNK_BYTES of them unless one head alone is more, twice (P and its product with W_O).
        let per_head = F32.saturating_mul(d).saturating_mul(qw);
        let chunk_heads = (slim_capture::P_CHUNK_BYTES as u64 / per_head.max(1)).clamp(1, heads.max(1));
        let head_chunks = 2u64.saturating_mul(chunk_heads).saturating_mul(per_head);
        let attn_stats = square(8, qw).saturating_add(square(8, heads).saturating_mul(d)).saturating_add(head_chunks);
        let bands = 3u64.saturating_mul(8 * 1024).saturating_mul(f.max(d));
        // The least-squares refit of down_proj (`slim_recover::lstsq_refit`), bounded with every channel kept:
        // the covariance widened to f64, the kept block and its Cholesky factor, `W` in f64 and its products.
        let refit = if lstsq { square(24, f).saturating_add(16u64.saturating_mul(d).saturating_mul(f)) } else { 0 };
        let phases = [
            table.saturating_mul(3),
            [layer, attn, attn_stats, pass].iter().fold(0u64, |a, &b| a.saturating_add(b)),
            [layer, attn, square(8, f), pass].iter().fold(0u64, |a, &b| a.saturating_add(b)),
            [mlp, attn, square(4, f), square(24, d), bands, refit].iter().fold(0u64, |a, &b| a.saturating_add(b)),
            layer.saturating_mul(2).saturating_add(pass),
        ];
        let mut held = act.saturating_mul(3);
        let mut peak = phases.into_iter().max().unwrap_or(0);
        if taylor {
            peak = peak.max(layer.saturating_add(self.forward(windows.min(4), len)));
            held = held.saturating_add(act.saturating_mul(c.num_layers() as u64 + 1));
        }
        PROCESS_BASE.saturating_add(held).saturating_add(peak)
    }

    /// Bytes beyond the weights of one uncached forward pass over `batch × len` tokens that returns all logits.
    pub(crate) fn forward(&self, batch: usize, len: usize) -> u64 {
        self.pass(batch, 0, len, len, true)
    }

    /// Bytes beyond the weights of an uncached pass over `batch × len` tokens through the layers alone, without
    /// the lm_head: the pipeline's calibration passes (layer importance, the per-layer captures).
    pub(crate) fn layers_only(&self, batch: usize, len: usize) -> u64 {
        self.pass(batch, 0, len, 0, true)
    }

    /// Bytes beyond the weights of a pass of `new` tokens per sequence after `past` cached ones, holding the KV
    /// cache of `past + new` positions, with logits of `logit_positions` positions per sequence read back.
    pub(crate) fn cached_pass(&self, batch: usize, past: usize, new: usize, logit_positions: usize) -> u64 {
        self.kv_cache(batch, past.saturating_add(new)).saturating_add(self.pass(
            batch,
            past,
            new,
            logit_positions,
            false,
        ))
    }

    /// The KV cache of `batch` sequences of `positions`: keys and values of every layer, in f32.
    pub(crate) fn kv_cache(&self, batch: usize, positions: usize) -> u64 {
        if !self.host {
            return 0;
        }
        let widths: u64 = self.cfg.layers.iter().map(|l| (2 * l.num_kv_heads * self.cfg.head_dim) as u64).sum();
        F32.saturating_mul(widths).saturating_mul(batch as u64).saturating_mul(positions as u64)
    }

    /// One pass: the largest layer's activations or the logits, whichever is larger, plus the residual stream.
    fn pass(&self, batch: usize, past: usize, new: usize, logit_positions: usize, uncached: bool) -> u64 {
        let c = self.cfg;
        let (b, t, kv) = (batch as u64, new as u64, past.saturating_add(new) as u64);
        let n = b.saturating_mul(t);
        let d = c.hidden_size as u64;
        let dh = c.head_dim as u64;
        // The logits: on the CPU backend the host reads the runtime's buffer without a copy; on a GPU backend the
        // read-back copy is the host's share.
        let logit_floats = b.saturating_mul(logit_positions as u64).saturating_mul(c.vocab_size as u64);
        if !self.host {
            return F32.saturating_mul(logit_floats);
        }
        let layer = c
            .layers
            .iter()
            .map(|l| {
                let (qw, kw, f) = ((l.num_heads as u64) * dh, (l.num_kv_heads as u64) * dh, l.intermediate_size as u64);
                // Attention: input and norm, the fused q/k/v projection, its sliced and rotated copies, the
                // per-head outputs and their concatenation.
                let attn = 2 * d + 3 * (qw + 2 * kw) + 2 * qw;
                // MLP: input, norm, gate/up, the SwiGLU product, down_proj.
                let mlp = 3 * d + 3 * f;
                let heads_at_once = b.saturating_mul(l.num_heads as u64).min(self.threads);
                let scores = heads_at_once.saturating_mul(t).saturating_mul(kv);
                // With a cache, the keys and values of a layer are copied by `cat` while they are appended.
                let append = if uncached { 0 } else { b.saturating_mul(kv).saturating_mul(2 * kw) };
                n.saturating_mul(attn.max(mlp)).saturating_add(scores).saturating_add(append)
            })
            .max()
            .unwrap_or(0);
        F32.saturating_mul(layer.max(logit_floats).saturating_add(n.saturating_mul(2 * d)))
    }
}

/// `1.5 GiB`, `320.0 MiB`, `12 bytes`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut x = bytes as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// `123`, `64K`, `1.5G`, `2T` (powers of 1024; an optional `B` or `iB` after the letter).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_suffix("iB").or_else(|| s.strip_suffix('B')).unwrap_or(s);
    let (num, shift) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 10),
        'M' | 'm' => (&s[..s.len() - 1], 20),
        'G' | 'g' => (&s[..s.len() - 1], 30),
        'T' | 't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let x: f64 = num.trim().parse().ok()?;
    (x.is_finite() && x >= 0.0).then(|| (x * (1u64 << shift) as f64) as u64)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What a cgroup v2 limit leaves: `memory.max − memory.current`; `None` without a limit (`max`) or files.
fn cgroup_remaining(max: Option<&str>, current: Option<&str>) -> Option<u64> {
    let max: u64 = max?.trim().parse().ok()?;
    let current: u64 = current?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Clap parser of a whole number of at least 1, with a message that says so (negative values included, for the
/// options that set `allow_negative_numbers`).
pub(crate) fn at_least_1(s: &str) -> std::result::Result<usize, String> {
    at_least(s, 1)
}

/// Clap parser of a whole number of at least 2.
pub(crate) fn at_least_2(s: &str) -> std::result::Result<usize, String> {
    at_least(s, 2)
}

/// Clap parser of a whole number, 0 allowed.
pub(crate) fn whole(s: &str) -> std::result::Result<usize, String> {
    at_least(s, 0)
}

fn at_least(s: &str, min: usize) -> std::result::Result<usize, String> {
    let want = || if min == 0 { "a whole number".to_string() } else { format!("a whole number, at least {min}") };
    let t = s.trim();
    if t.starts_with('-') && t.len() > 1 && t[1..].chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("must be {}, got a negative number", want()));
    }
    match t.parse::<usize>() {
        Ok(v) if v >= min => Ok(v),
        Ok(v) => Err(format!("must be {}, got {v}", want())),
        Err(e) => Err(format!("must be {} ({e})", want())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_checkpoint::synthetic::SyntheticSpec;

    /// Peak resident memory of the LLaMA-7B shape's 2-layer run with `--preset slimllm-lstsq`.
    const LSTSQ_MEASURED: u64 = 4_931_016 * 1024;

    #[test]
    fn memory_figures_parse_and_the_smaller_limit_wins() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_bytes("2t"), Some(2 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1G"), None);
        let info = "MemTotal:       24683664 kB\nMemFree:        22816088 kB\nMemAvailable:   23639488 kB\n";
        assert_eq!(meminfo_available(info), Some(23_639_488 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_remaining(Some("max\n"), Some("100\n")), None);
        assert_eq!(cgroup_remaining(Some("1000\n"), Some("300\n")), Some(700));
        assert_eq!(cgroup_remaining(None, Some("300")), None);
    }

    #[test]
    fn check_fits_names_the_options_the_bytes_and_the_memory() {
        let mem = Memory { bytes: 1 << 30, source: "a test".into() };
        assert!(check_fits_in("--batch 1", 1 << 30, &mem).is_ok());
        let e = check_fits_in("--batch 64 × --seq-len 8192", 40 << 30, &mem).unwrap_err().to_string();
        for want in ["--batch 64 × --seq-len 8192", "40.0 GiB", "42949672960 bytes", "1.0 GiB is available", "a test"]
        {
            assert!(e.contains(want), "{want:?} missing from {e}");
        }
    }

    #[test]
    fn numeric_options_name_their_bound() {
        assert_eq!(at_least_1("3"), Ok(3));
        assert_eq!(at_least_1("0").unwrap_err(), "must be a whole number, at least 1, got 0");
        assert_eq!(at_least_1("-4").unwrap_err(), "must be a whole number, at least 1, got a negative number");
        assert!(at_least_2("1").unwrap_err().contains("at least 2"));
        assert!(at_least_1("2.5").unwrap_err().contains("invalid digit"));
        assert_eq!(whole("0"), Ok(0));
        assert!(whole("-1").unwrap_err().contains("negative"));
    }

    /// `config.json` of a model with these sizes (LLaMA layout, untied unless said).
    fn config(layers: usize, d: usize, heads: usize, kv: usize, f: usize, vocab: usize, tied: bool) -> ModelConfig {
        let json = serde_json::json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": d,
            "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": f,
            "num_hidden_layers": layers, "vocab_size": vocab, "tie_word_embeddings": tied,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        });
        ModelConfig::from_json_str(&json.to_string()).unwrap()
    }

    /// The pipeline's estimate against the peak resident memory `/usr/bin/time -v slimllm pipeline run --model M
    /// --no-eval --gguf none` measured on an empty cache (32 windows of 128 tokens, 2 threads; docs/measurements.md,
    /// 2026-12-05): never below it, and above it by at most 30 %. The sum of every term, the check's estimate
    /// before, was 6.94 GB for the LLaMA-7B shape.
    #[test]
    fn the_pipeline_estimate_is_its_largest_phase_and_covers_the_measured_peaks() {
        let smollm2 = config(30, 576, 9, 3, 1536, 49152, true);
        let llama7b = config(2, 4096, 32, 32, 11008, 32000, false);
        for (name, cfg, lstsq, measured) in [
            ("SmolLM2-135M", &smollm2, false, 399_716 * 1024u64),
            ("LLaMA-7B shape, 2 layers", &llama7b, false, 2_990_000_000),
            ("LLaMA-7B shape, 2 layers, lstsq", &llama7b, true, LSTSQ_MEASURED),
        ] {
            let fp = Footprint { cfg, host: true, threads: 2 };
            let est = fp.pipeline(32, 128, false, lstsq);
            let ratio = est as f64 / measured as f64;
            assert!((1.0..=1.3).contains(&ratio), "{name}: estimate {est} against {measured} measured ({ratio:.3})");
        }
        // Twice the layers, the same peak: the model's depth does not count.
        let deeper = config(4, 4096, 32, 32, 11008, 32000, false);
        let fp = |cfg| Footprint { cfg, host: true, threads: 2 };
        assert_eq!(fp(&deeper).pipeline(32, 128, false, false), fp(&llama7b).pipeline(32, 128, false, false));
        // A large vocabulary makes the embedding the largest phase (Qwen2.5-1.5B's sizes): 3 copies of its table.
        let qwen = config(28, 1536, 12, 2, 8960, 151936, false);
        let act = 4 * 32 * 128 * 1536;
        assert_eq!(fp(&qwen).pipeline(32, 128, false, false), PROCESS_BASE + 3 * act + 3 * 4 * 151936 * 1536);
        // The Taylor scorer keeps every layer's input: 28 + 1 more activations.
        let taylor = fp(&qwen).pipeline(32, 128, true, false);
        assert!(taylor >= PROCESS_BASE + (3 + 29) * act + 3 * 4 * 151936 * 1536, "{taylor}");
    }

    /// `eval ppl --weights W` against the peak resident memory `/usr/bin/time -v slimllm eval ppl --model M --data
    /// ptb-valid --windows 8 --weights W` (one batch of 8 × 128, 2 threads, 2026-12-06): never below it, and above
    /// it by at most 30 %.
    #[test]
    fn the_whole_model_estimates_cover_the_measured_peaks() {
        let smollm2 = config(30, 576, 9, 3, 1536, 49152, true);
        let qwen = config(28, 1536, 12, 2, 8960, 151936, false);
        for (name, cfg, dtype, measured) in [
            ("SmolLM2-135M", &smollm2, WeightDtype::Bf16, 765_164 * 1024u64),
            ("SmolLM2-135M", &smollm2, WeightDtype::F32, 1_096_536 * 1024),
            ("Qwen2.5-1.5B", &qwen, WeightDtype::Bf16, 6_195_068 * 1024),
            ("Qwen2.5-1.5B", &qwen, WeightDtype::F32, 8_274_304 * 1024),
        ] {
            let fp = Footprint { cfg, host: true, threads: 2 };
            let est = fp.peak_in(dtype, fp.forward(8, 128));
            let ratio = est as f64 / measured as f64;
            assert!((1.0..=1.3).contains(&ratio), "{name} {dtype:?}: estimate {est} against {measured} ({ratio:.3})");
            // Half the bytes of every parameter but the embedding's.
            let table = (cfg.vocab_size * cfg.hidden_size) as u64;
            let tied = if cfg.tie_word_embeddings { table } else { 0 };
            assert_eq!(fp.resident_in(WeightDtype::F16), 4 * table + 2 * (cfg.num_params() - table + tied));
            assert_eq!(fp.resident_in(WeightDtype::F32), fp.resident());
        }
    }

    /// The terms of the estimate, checked by hand on a small model: 2 layers, d 16, 4 heads of 4, 2 KV heads,
    /// FFN 24, vocabulary 1000, tied embeddings.
    #[test]
    fn the_estimate_counts_logits_scores_activations_and_cache() {
        let (cfg, _) = SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 24, 1000, 1).build();
        assert!(cfg.tie_word_embeddings);
        let fp = Footprint { cfg: &cfg, host: true, threads: 2 };
        let params = cfg.num_params();
        assert_eq!(fp.resident(), 4 * (params + 1000 * 16));
        // KV: 2 layers × (K and V: 2 × 2 heads × 4) floats per position.
        assert_eq!(fp.kv_cache(3, 10), 4 * 2 * 16 * 3 * 10);
        // A pass of 2 × 100 tokens: logits 2·100·1000 floats exceed the layer's 200 tokens × max(attn 2·16 + 3·32 +
        // 2·16 = 160, mlp 3·16 + 3·24 = 120) + 2 heads × 100² scores, so they count, with the residual stream.
        let n = 200u64;
        let layer = n * 160 + 2 * 100 * 100;
        let logits = n * 1000;
        assert!(logits > layer);
        assert_eq!(fp.forward(2, 100), 4 * (logits + n * 32));
        // Long windows: the scores grow with the square and win.
        let (t, layer) = (10_000u64, 10_000u64 * 160 + 2 * 10_000 * 10_000);
        assert!(layer > t * 1000);
        assert_eq!(fp.forward(1, 10_000), 4 * (layer + t * 32));
        // A cached pass adds the cache and the copy of one layer's keys and values made while appending.
        // 10 new tokens after 5000: activations, 2 heads × 10 × 5010 scores and the appended keys and values
        // (5010 × 2 × 8) exceed the logits of the last position (1000 floats).
        let layer = 10 * 160 + 2 * 10 * 5010 + 5010 * 16;
        assert!(layer > 1000);
        assert_eq!(fp.cached_pass(1, 5000, 10, 1), fp.kv_cache(1, 5010) + 4 * (layer + 10 * 32));
        // The job: the base, the weights, the load's transient copies (the table twice: larger than a layer here)
        // and the pass.
        assert!(cfg.layer_params(0) < 1000 * 16);
        assert_eq!(fp.peak_in(WeightDtype::F32, 1 << 20), PROCESS_BASE + fp.resident() + 4 * 2 * 1000 * 16 + (1 << 20));
        // Absurd sizes saturate instead of wrapping.
        assert_eq!(fp.forward(usize::MAX / 2, usize::MAX / 2), u64::MAX);
        assert_eq!(fp.peak_in(WeightDtype::F32, u64::MAX), u64::MAX);
        // On a GPU backend only the loading and the logits read back are on the host.
        let gpu = Footprint { host: false, ..fp };
        assert_eq!(gpu.forward(2, 100), 4 * 2 * 100 * 1000);
        assert_eq!((gpu.resident(), gpu.kv_cache(3, 10)), (0, 0));
        assert_eq!(gpu.peak_in(WeightDtype::Bf16, 0), PROCESS_BASE + 4 * 2 * 1000 * 16);
    }
}
