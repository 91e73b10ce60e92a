//! `slimllm pipeline run`: prune a model with the SlimLLM stage graph through the cache,
//! evaluate perplexity before and after, and write `data/runs/<run>/summary.json`.

use crate::{progress, GlobalArgs};
use anyhow::{ensure, Context, Result};
use burn_tensor::backend::Backend;
use clap::ValueEnum;
use serde_json::json;
use slim_artifact::schema::GqaMode;
use slim_artifact::Store;
use slim_capture::{CalibConfig, CalibSource};
use slim_data::EvalText;
use slim_eval::PplConfig;
use slim_model::{burn_tensor, dispatch, BackendRun};
use slim_pipeline::{eval_ppl_cached, model_key, run_pipeline, CalibMode, PipelineConfig, RunReport};
use slim_recover::RecoveryKind;
use slim_score::{KeepLowest, ScorerKind};
use std::path::{Path, PathBuf};

/// Pipeline commands.
#[derive(clap::Subcommand)]
pub enum PipelineCommand {
    /// Prune, then evaluate perplexity before and after; every stage is cached.
    Run(RunArgs),
}

/// Head and channel scorer.
#[derive(Clone, Copy, ValueEnum)]
pub enum Scorer {
    /// SlimLLM: Pearson head redundancy with greedy swap; PCA feature-space channel score.
    Slimllm,
    /// Weight magnitude: o_proj column norms per head, down_proj column norm per channel.
    Magnitude,
}

/// Output-projection recovery.
#[derive(Clone, Copy, ValueEnum)]
pub enum Recovery {
    /// Per-output-dimension affine fit of o_proj and down_proj (the paper).
    Affine,
    /// No correction.
    None,
}

/// Grouped-query attention unit.
#[derive(Clone, Copy, ValueEnum)]
pub enum Gqa {
    /// Every KV group drops the same number of query heads; all KV heads stay.
    PerGroup,
    /// Whole KV groups (query heads and KV head) are pruned.
    WholeGroup,
}

/// Calibration mode.
#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// The paper: each layer calibrated on the pruned layers below it.
    Sequential,
    /// Every layer calibrated on the unpruned model (one capture for every scorer).
    Dense,
}

/// Arguments of `slimllm pipeline run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Dense model directory (HF layout).
    #[arg(long, default_value = "data/models/smollm2-135m")]
    model: PathBuf,
    /// Fraction of the model's total parameters to remove (tied embeddings counted once).
    #[arg(long, default_value_t = 0.2)]
    target: f64,
    /// Layers to prune (top-K by input/output similarity); default L − 4.
    #[arg(long)]
    pruned_layers: Option<usize>,
    /// Softmax temperature α of the layer allocation; default 10 up to 35 % and 7 above.
    #[arg(long)]
    alpha: Option<f64>,
    /// Head and channel scorer.
    #[arg(long, value_enum, default_value_t = Scorer::Slimllm)]
    scorer: Scorer,
    /// Output-projection recovery.
    #[arg(long, value_enum, default_value_t = Recovery::Affine)]
    recovery: Recovery,
    /// Grouped-query attention unit. whole-group is the default: on SmolLM2-135M it gave lower
    /// PTB-valid perplexity than per-group at both 20 % and 50 % (docs/measurements.md).
    #[arg(long, value_enum, default_value_t = Gqa::WholeGroup)]
    gqa: Gqa,
    /// Calibration mode.
    #[arg(long, value_enum, default_value_t = Mode::Sequential)]
    calib_mode: Mode,
    /// Calibration text: `brown-fiction` or `ptb-train`.
    #[arg(long, default_value = "brown-fiction")]
    calib_source: CalibSource,
    /// Calibration windows.
    #[arg(long, default_value_t = 32)]
    calib_windows: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 128)]
    calib_len: usize,
    /// Calibration seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of lowest-scoring channels always kept (the reference code's 1 % rule); 0 turns it off.
    #[arg(long, default_value_t = 0.01)]
    keep_lowest: f64,
    /// Perplexity texts evaluated before and after.
    #[arg(long, value_delimiter = ',', default_value = "ptb-valid")]
    eval: Vec<EvalText>,
    /// Evaluate only the first N windows (all when omitted).
    #[arg(long)]
    eval_windows: Option<usize>,
    /// Skip perplexity.
    #[arg(long)]
    no_eval: bool,
    /// Run name: results go to `data/runs/<run>/`. Default: derived from the settings.
    #[arg(long)]
    run: Option<String>,
    /// Cache root (default `$SLIMLLM_CACHE` or `data/cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
}

pub fn run(c: PipelineCommand, g: &GlobalArgs) -> Result<()> {
    let PipelineCommand::Run(a) = c;
    ensure!(a.target > 0.0 && a.target < 1.0, "--target must lie in (0, 1), got {}", a.target);
    ensure!((0.0..0.5).contains(&a.keep_lowest), "--keep-lowest must lie in [0, 0.5), got {}", a.keep_lowest);
    let cfg = PipelineConfig {
        calib: CalibConfig { source: a.calib_source, n_windows: a.calib_windows, seq_len: a.calib_len, seed: a.seed },
        target: a.target,
        pruned_layers: a.pruned_layers,
        alpha: a.alpha,
        scorer: match a.scorer {
            Scorer::Slimllm => ScorerKind::SlimLlm,
            Scorer::Magnitude => ScorerKind::Magnitude,
        },
        keep_lowest: if a.keep_lowest == 0.0 { KeepLowest::None } else { KeepLowest::Fraction(a.keep_lowest) },
        recovery: match a.recovery {
            Recovery::Affine => RecoveryKind::Affine,
            Recovery::None => RecoveryKind::None,
        },
        gqa: match a.gqa {
            Gqa::PerGroup => GqaMode::PerGroup,
            Gqa::WholeGroup => GqaMode::WholeGroup,
        },
        mode: match a.calib_mode {
            Mode::Sequential => CalibMode::Sequential,
            Mode::Dense => CalibMode::Dense,
        },
    };
    let run_name = a.run.clone().unwrap_or_else(|| {
        format!(
            "{}-{}-{:.0}pct-{}-{}-{}",
            a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
            a.scorer.to_possible_value().expect("no skipped variants").get_name(),
            a.target * 100.0,
            a.recovery.to_possible_value().expect("no skipped variants").get_name(),
            a.gqa.to_possible_value().expect("no skipped variants").get_name(),
            a.calib_mode.to_possible_value().expect("no skipped variants").get_name(),
        )
    });
    let store = Store::open(&a.cache.clone().unwrap_or_else(Store::default_root))?;
    let summary = dispatch(g.backend.kind(), Job { a: &a, cfg: &cfg, store: &store, g, run_name: &run_name })?;
    let run_dir = g.data_root.join("runs").join(&run_name);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    slim_artifact::write_json_atomic(&run_dir.join("summary.json"), &summary)?;
    tracing::info!("summary written to {}", run_dir.join("summary.json").display());
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

struct Job<'a> {
    a: &'a RunArgs,
    cfg: &'a PipelineConfig,
    store: &'a Store,
    g: &'a GlobalArgs,
    run_name: &'a str,
}

impl BackendRun for Job<'_> {
    type Output = serde_json::Value;
    fn run<B: Backend>(self, device: B::Device) -> Result<serde_json::Value> {
        let (a, g) = (self.a, self.g);
        let t = std::time::Instant::now();
        let out = run_pipeline::<B>(&a.model, self.cfg, self.store, &g.data_root, &device, progress(g))?;
        let prune_s = t.elapsed().as_secs_f64();
        let mut report: RunReport = out.report;
        let mut ppl = serde_json::Map::new();
        if !a.no_eval {
            let dense_key = model_key(&a.model)?;
            let pcfg = PplConfig { seq_len: 128, batch: 8, max_windows: a.eval_windows, progress: progress(g) };
            for data in &a.eval {
                let before = eval_ppl_cached::<B>(self.store, &mut report, &a.model, dense_key, *data, &g.data_root, &pcfg, &device)?;
                let after = eval_ppl_cached::<B>(self.store, &mut report, &out.pruned_dir, out.pruned_key, *data, &g.data_root, &pcfg, &device)?;
                tracing::info!("{}: perplexity {:.3} → {:.3} ({} windows)", data.name(), before.ppl, after.ppl, after.windows);
                ppl.insert(data.name().to_string(), json!({"before": before, "after": after}));
            }
        }
        let run_dir = g.data_root.join("runs").join(self.run_name);
        link_model_dir(&out.pruned_dir, &run_dir.join("model"))?;
        eprint!("{}", report.table());
        let first = a.eval.first().map(|d| d.name());
        let pick = |which: &str| first.and_then(|n| ppl.get(n)).and_then(|v| v[which]["ppl"].as_f64());
        Ok(json!({
            "run": self.run_name,
            "model": a.model.display().to_string(),
            "config": self.cfg,
            "backend": g.backend.kind().name(),
            "params_before": out.params_before,
            "params_after": out.params_after,
            "removed_fraction": 1.0 - out.params_after as f64 / out.params_before as f64,
            "alloc": out.alloc,
            "ppl_data": first,
            "ppl_before": pick("before"),
            "ppl_after": pick("after"),
            "ppl": ppl,
            "pruning_seconds": prune_s,
            "stages": report.stages(),
            "layers": out.layers,
            "layer_importance": out.importance,
            "pruned_model": run_dir.join("model").display().to_string(),
            "cache_entry": out.pruned_key.to_hex(),
        }))
    }
}

/// Places the pruned model under the run: hard links to the cache entry's files (copies
/// where links are impossible), replaced atomically.
fn link_model_dir(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_file_name(format!(".model.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let to = tmp.join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    let _ = std::fs::remove_dir_all(dst);
    std::fs::rename(&tmp, dst).with_context(|| format!("moving {} into place", dst.display()))
}
