//! `slimllm pipeline run`: prune a model with the SlimLLM stage graph through the cache,
//! evaluate perplexity before and after, and write `data/runs/<run>/summary.json`;
//! `slimllm pipeline explain`: what a run would compute and why; `slimllm stage <name>`:
//! rerun one stage.

use crate::{progress, GlobalArgs};
use anyhow::{ensure, Context, Result};
use burn_tensor::backend::Backend;
use clap::ValueEnum;
use serde_json::json;
use slim_artifact::schema::GqaMode;
use slim_artifact::Store;
use slim_capture::{CalibConfig, CalibSource};
use slim_data::EvalText;
use slim_model::{burn_tensor, dispatch, BackendRun};
use slim_pipeline::{
    explain_pipeline, run_pipeline, stage_table, AllocationKind, CalibMode, EvalInput, ModelSource, PipelineConfig,
    RunName, RunOptions, RunRequest, RunSummary, RunsRoot, Stage,
};
use slim_recover::RecoveryKind;
use slim_score::{KeepLowest, ScorerKind};
use std::path::{Path, PathBuf};

/// Pipeline commands.
#[derive(clap::Subcommand)]
pub enum PipelineCommand {
    /// Prune, then evaluate perplexity before and after; every stage is cached.
    Run(RunArgs),
    /// Say, for every cache entry a run with these settings needs, whether it is cached
    /// and, if not, what differs from the closest cached entry. Runs nothing.
    Explain(PipelineArgs),
}

/// Arguments of `slimllm stage`.
#[derive(clap::Args)]
pub struct StageArgs {
    /// The stage whose entries are recomputed (and replaced in the cache).
    #[arg(value_enum)]
    stage: StageName,
    #[command(flatten)]
    p: PipelineArgs,
}

/// A stage of the pipeline.
#[derive(Clone, Copy, ValueEnum)]
pub enum StageName {
    /// Calibration windows, layer importance and every layer's statistics.
    Capture,
    /// Head and channel selection.
    Score,
    /// Per-layer pruning ratios.
    Alloc,
    /// Slicing the weights into the pruned model directory.
    Surgery,
    /// The affine refit of o_proj and down_proj.
    Recover,
}

/// Head and channel scorer.
#[derive(Clone, Copy, ValueEnum)]
pub enum Scorer {
    /// SlimLLM: Pearson head redundancy with greedy swap; PCA feature-space channel score.
    Slimllm,
    /// Weight magnitude: o_proj column norms per head, down_proj column norm per channel.
    Magnitude,
    /// Wanda structured: |W|·‖x‖ over each head's or channel's input columns.
    WandaSp,
    /// FLAP's fluctuation metric: input variance times the squared weight-column norm.
    Flap,
    /// Seeded random choice: the floor every scorer must beat.
    Random,
    /// LLM-Pruner's first-order Taylor |∂ℒ/∂W ⊙ W| summed over each head's and channel's
    /// weights (one gradient pass of the dense model on the calibration windows).
    Taylor,
}

/// Per-layer ratio allocation.
#[derive(Clone, Copy, ValueEnum)]
pub enum Allocation {
    /// The paper: top-K layers by input/output cosine similarity, softmax with temperature.
    Cosine,
    /// LLM-Pruner: the same ratio on layers 4..L−2.
    Uniform,
    /// FLAP: heads and channels of all layers ranked together by per-layer standardized
    /// importance from the dense model, heads weighted by their parameter cost.
    FlapGlobal,
}

/// Output-projection recovery.
#[derive(Clone, Copy, ValueEnum)]
pub enum Recovery {
    /// Per-output-dimension affine fit of o_proj and down_proj (the paper).
    Affine,
    /// No correction.
    None,
    /// FLAP's bias compensation: pruned inputs replaced by their calibration mean.
    FlapBias,
    /// Ridge least-squares refit of o_proj's and down_proj's kept columns plus a bias, from
    /// the calibration covariance of their inputs (beyond the paper).
    Lstsq,
}

/// A named recipe.
#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// The paper: slimllm scorer, cosine allocation, affine recovery, sequential calibration.
    Paper,
    /// The paper's recipe with the ridge least-squares refit (`lstsq`, ε = 1) instead of the
    /// affine one: the best recipe measured at 50 % on SmolLM2-135M (it loses at 20 %;
    /// docs/variants.md).
    SlimllmLstsq,
}

impl Preset {
    /// Scorer, allocation, recovery and calibration mode of the recipe.
    fn recipe(self) -> (Scorer, Allocation, Recovery, Mode) {
        match self {
            Preset::Paper => (Scorer::Slimllm, Allocation::Cosine, Recovery::Affine, Mode::Sequential),
            Preset::SlimllmLstsq => (Scorer::Slimllm, Allocation::Cosine, Recovery::Lstsq, Mode::Sequential),
        }
    }
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

/// What to prune and how: every setting that enters a cache key, and the cache.
#[derive(clap::Args)]
pub struct PipelineArgs {
    /// Dense model directory (HF layout).
    #[arg(long, default_value = "data/models/smollm2-135m")]
    model: PathBuf,
    /// Fraction of the model's total parameters to remove (tied embeddings counted once).
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    target: f64,
    /// Layers to prune (top-K by input/output similarity); default L − 4.
    #[arg(long)]
    pruned_layers: Option<usize>,
    /// Softmax temperature α of the layer allocation; default 10 up to 35 % and 7 above.
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// A named recipe: the scorer, allocation, recovery and calibration mode below, each of
    /// which its own flag still overrides (docs/variants.md).
    #[arg(long, value_enum, default_value_t = Preset::Paper)]
    preset: Preset,
    /// Per-layer ratio allocation (default: the preset's; `--pruned-layers` and `--alpha` apply
    /// to `cosine` only).
    #[arg(long, value_enum)]
    allocation: Option<Allocation>,
    /// Head and channel scorer (default: the preset's).
    #[arg(long, value_enum)]
    scorer: Option<Scorer>,
    /// Output-projection recovery (default: the preset's).
    #[arg(long, value_enum)]
    recovery: Option<Recovery>,
    /// Grouped-query attention unit. whole-group is the default: on SmolLM2-135M it gave lower
    /// PTB-valid perplexity than per-group at both 20 % and 50 % (docs/measurements.md).
    #[arg(long, value_enum, default_value_t = Gqa::WholeGroup)]
    gqa: Gqa,
    /// Calibration mode (default: the preset's).
    #[arg(long, value_enum)]
    calib_mode: Option<Mode>,
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
    /// `lstsq` ridge ε: λ = ε · mean(diag Σ[K,K]), the penalty pulling the refit toward
    /// the sliced weights (1 was best of 10⁻³ … 10 on SmolLM2, docs/variants.md).
    #[arg(long, default_value_t = slim_recover::LstsqConfig::standard().ridge_rel, allow_negative_numbers = true)]
    lstsq_ridge: f64,
    /// Cache root (default `$SLIMLLM_CACHE` or `data/cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Re-hash every file of a reused pruned model against its cache manifest (by default
    /// only sizes are checked, and the contents of files modified since they were cached).
    #[arg(long)]
    verify_reused: bool,
}

/// Arguments of `slimllm pipeline run`.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    p: PipelineArgs,
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
    /// Also write `data/runs/<run>/report/report.md` (tables and charts) at the end.
    #[arg(long)]
    report: bool,
}

impl PipelineArgs {
    /// The scorer, allocation, recovery and calibration mode: each flag, else the preset's.
    fn recipe(&self) -> (Scorer, Allocation, Recovery, Mode) {
        let (s, al, r, m) = self.preset.recipe();
        (
            self.scorer.unwrap_or(s),
            self.allocation.unwrap_or(al),
            self.recovery.unwrap_or(r),
            self.calib_mode.unwrap_or(m),
        )
    }

    /// The pipeline configuration these flags describe, checked.
    fn config(&self) -> Result<PipelineConfig> {
        let a = self;
        let (scorer, allocation, recovery, calib_mode) = a.recipe();
        ensure!(a.target > 0.0 && a.target < 1.0, "--target must lie in (0, 1), got {}", a.target);
        ensure!((0.0..0.5).contains(&a.keep_lowest), "--keep-lowest must lie in [0, 0.5), got {}", a.keep_lowest);
        ensure!(a.calib_windows >= 1, "--calib-windows must be at least 1, got {}", a.calib_windows);
        ensure!(a.calib_len >= 2, "--calib-len must be at least 2 tokens, got {}", a.calib_len);
        if let Some(alpha) = a.alpha {
            // A negative temperature would reverse the allocation (the layers whose output
            // differs most from their input pruned hardest); 0 spreads it evenly over the K.
            ensure!(
                alpha >= 0.0 && alpha.is_finite(),
                "--alpha must be a finite temperature of at least 0 (a negative one reverses the allocation), got {alpha}"
            );
        }
        ensure!(
            matches!(allocation, Allocation::Cosine) || (a.pruned_layers.is_none() && a.alpha.is_none()),
            "--pruned-layers and --alpha set the cosine allocation; --allocation {} does not use them",
            allocation.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
        );
        ensure!(
            a.lstsq_ridge >= 0.0 && a.lstsq_ridge.is_finite(),
            "--lstsq-ridge must be finite and at least 0, got {}",
            a.lstsq_ridge
        );
        Ok(PipelineConfig {
            calib: CalibConfig {
                source: a.calib_source,
                n_windows: a.calib_windows,
                seq_len: a.calib_len,
                seed: a.seed,
            },
            target: a.target,
            pruned_layers: a.pruned_layers,
            alpha: a.alpha,
            allocation: match allocation {
                Allocation::Cosine => AllocationKind::Cosine,
                Allocation::Uniform => AllocationKind::Uniform,
                Allocation::FlapGlobal => AllocationKind::FlapGlobal,
            },
            scorer: match scorer {
                Scorer::Slimllm => ScorerKind::SlimLlm,
                Scorer::Magnitude => ScorerKind::Magnitude,
                Scorer::WandaSp => ScorerKind::WandaSp,
                Scorer::Flap => ScorerKind::Flap,
                Scorer::Random => ScorerKind::Random,
                Scorer::Taylor => ScorerKind::Taylor,
            },
            keep_lowest: if a.keep_lowest == 0.0 { KeepLowest::None } else { KeepLowest::Fraction(a.keep_lowest) },
            recovery: match recovery {
                Recovery::Affine => RecoveryKind::Affine,
                Recovery::None => RecoveryKind::None,
                Recovery::FlapBias => RecoveryKind::FlapBias,
                Recovery::Lstsq => RecoveryKind::Lstsq,
            },
            gqa: match a.gqa {
                Gqa::PerGroup => GqaMode::PerGroup,
                Gqa::WholeGroup => GqaMode::WholeGroup,
            },
            lstsq: slim_recover::LstsqConfig { ridge_rel: a.lstsq_ridge, ..slim_recover::LstsqConfig::standard() },
            mode: match calib_mode {
                Mode::Sequential => CalibMode::Sequential,
                Mode::Dense => CalibMode::Dense,
            },
        })
    }

    /// The run name derived from the settings: model, scorer, allocation, target, recovery,
    /// GQA unit and calibration mode.
    fn default_run_name(&self) -> String {
        let (scorer, allocation, recovery, mode) = self.recipe();
        let name = |v: Option<clap::builder::PossibleValue>| v.expect("no skipped variants").get_name().to_string();
        format!(
            "{}-{}-{}-{:.0}pct-{}-{}-{}",
            self.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
            name(scorer.to_possible_value()),
            name(allocation.to_possible_value()),
            self.target * 100.0,
            name(recovery.to_possible_value()),
            name(self.gqa.to_possible_value()),
            name(mode.to_possible_value()),
        )
    }

    fn store(&self) -> Result<Store> {
        Ok(Store::open(&self.cache.clone().unwrap_or_else(Store::default_root))?)
    }
}

pub fn run(c: PipelineCommand, g: &GlobalArgs) -> Result<()> {
    match c {
        PipelineCommand::Run(a) => run_and_evaluate(a, g),
        PipelineCommand::Explain(p) => {
            let cfg = p.config()?;
            let lines = explain_pipeline(&ModelSource::open(&p.model)?, &cfg, &p.store()?, &g.data_root)?;
            for l in &lines {
                println!("{l}");
            }
            let hits = lines.iter().filter(|l| l.is_hit()).count();
            println!("{hits} of {} entries cached, {} would run", lines.len(), lines.len() - hits);
            Ok(())
        }
    }
}

/// `slimllm stage <name>`: the pipeline with that stage's entries recomputed and every other
/// stage taken from the cache where it can be; no evaluation.
pub fn stage(a: StageArgs, g: &GlobalArgs) -> Result<()> {
    let cfg = a.p.config()?;
    let store = a.p.store()?;
    let force = match a.stage {
        StageName::Capture => Stage::Capture,
        StageName::Score => Stage::Score,
        StageName::Alloc => Stage::Alloc,
        StageName::Surgery => Stage::Surgery,
        StageName::Recover => Stage::Recover,
    };
    let opts = RunOptions { progress: progress(g), force: Some(force), verify_reused: a.p.verify_reused };
    let model = ModelSource::open(&a.p.model)?;
    let out = dispatch(
        g.backend.kind(),
        StageJob { model: &model, cfg: &cfg, store: &store, data_root: &g.data_root, opts },
    )?;
    eprint!("{}", out.report.table());
    println!(
        "{}",
        json!({"stage": force, "stages": out.report.stages(), "params_after": out.params_after,
               "pruned_model": out.pruned_dir.display().to_string()})
    );
    Ok(())
}

struct StageJob<'a> {
    model: &'a ModelSource,
    cfg: &'a PipelineConfig,
    store: &'a Store,
    data_root: &'a Path,
    opts: RunOptions,
}

impl BackendRun for StageJob<'_> {
    type Output = slim_pipeline::PipelineOutcome;
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        run_pipeline::<B>(self.model, self.cfg, self.store, self.data_root, &device, &self.opts)
    }
}

/// `slimllm pipeline run`: every input is checked (settings, run name and folder, model,
/// evaluation texts) before the pruning starts; then [`slim_pipeline::run_and_evaluate`].
fn run_and_evaluate(a: RunArgs, g: &GlobalArgs) -> Result<()> {
    let cfg = a.p.config()?;
    ensure!(a.eval_windows != Some(0), "--eval-windows must be at least 1, got 0");
    let name = match &a.run {
        Some(n) => RunName::new(n)?,
        None => RunName::new(&a.p.default_run_name())?,
    };
    let run = RunsRoot::under(&g.data_root).run(&name);
    let evals = if a.no_eval {
        Vec::new()
    } else {
        a.eval
            .iter()
            .map(|d| EvalInput::load(*d, &g.data_root).with_context(|| format!("--eval {d}")))
            .collect::<Result<Vec<_>>>()?
    };
    let store = a.p.store()?;
    let model = ModelSource::open(&a.p.model)?;
    run.prepare()?;
    let opts = RunOptions { progress: progress(g), force: None, verify_reused: a.p.verify_reused };
    let req = RunRequest {
        model: &model,
        cfg: &cfg,
        evals: &evals,
        eval_windows: a.eval_windows,
        run: &run,
        backend: g.backend.kind().name(),
        data_root: &g.data_root,
    };
    let summary = dispatch(g.backend.kind(), Job { req: &req, store: &store, opts })?;
    eprint!("{}", stage_table(&summary.stages));
    if a.report {
        let path = crate::report::write_for_runs(&[run.path().to_path_buf()], &run.report_dir())?;
        tracing::info!("report written to {}", path.display());
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

struct Job<'a> {
    req: &'a RunRequest<'a>,
    store: &'a Store,
    opts: RunOptions,
}

impl BackendRun for Job<'_> {
    type Output = RunSummary;
    fn run<B: Backend>(self, device: B::Device) -> Result<RunSummary> {
        slim_pipeline::run_and_evaluate::<B>(self.req, self.store, &device, &self.opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        p: PipelineArgs,
    }

    fn config(argv: &[&str]) -> PipelineConfig {
        Wrap::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).unwrap().p.config().unwrap()
    }

    #[test]
    fn presets_set_the_recipe_and_each_flag_overrides_it() {
        assert_eq!(config(&[]), PipelineConfig::paper(0.2, GqaMode::WholeGroup), "the defaults are the paper's recipe");
        let c = config(&["--preset", "slimllm-lstsq"]);
        assert_eq!(
            (c.scorer, c.allocation, c.recovery, c.mode),
            (ScorerKind::SlimLlm, AllocationKind::Cosine, RecoveryKind::Lstsq, CalibMode::Sequential)
        );
        assert_eq!(c.lstsq.ridge_rel, 1.0);
        let c = config(&["--preset", "slimllm-lstsq", "--calib-mode", "dense", "--lstsq-ridge", "0.1"]);
        assert_eq!((c.recovery, c.mode, c.lstsq.ridge_rel), (RecoveryKind::Lstsq, CalibMode::Dense, 0.1));
    }
}
