//! `slimllm pipeline run`: prune a model with the SlimLLM stage graph through the cache,
//! evaluate perplexity before and after, and write `data/runs/<run>/summary.json`;
//! `slimllm pipeline explain`: what a run would compute and why; `slimllm stage <name>`:
//! rerun one stage.

use crate::{kind, progress, GlobalArgs};
use anyhow::{ensure, Context, Result};
use burn_tensor::backend::Backend;
use clap::ValueEnum;
use serde_json::json;
use slim_artifact::schema::GqaMode;
use slim_artifact::Kind;
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
    #[arg(value_parser = kind::<Stage>())]
    stage: Stage,
    #[command(flatten)]
    p: PipelineArgs,
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
    fn recipe(self) -> (ScorerKind, AllocationKind, RecoveryKind, CalibMode) {
        match self {
            Preset::Paper => (ScorerKind::SlimLlm, AllocationKind::Cosine, RecoveryKind::Affine, CalibMode::Sequential),
            Preset::SlimllmLstsq => {
                (ScorerKind::SlimLlm, AllocationKind::Cosine, RecoveryKind::Lstsq, CalibMode::Sequential)
            }
        }
    }
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
    #[arg(long, value_parser = kind::<AllocationKind>())]
    allocation: Option<AllocationKind>,
    /// Head and channel scorer (default: the preset's).
    #[arg(long, value_parser = kind::<ScorerKind>())]
    scorer: Option<ScorerKind>,
    /// Output-projection recovery (default: the preset's).
    #[arg(long, value_parser = kind::<RecoveryKind>())]
    recovery: Option<RecoveryKind>,
    /// Grouped-query attention unit. whole-group is the default: on SmolLM2-135M it gave lower
    /// PTB-valid perplexity than per-group at both 20 % and 50 % (docs/measurements.md).
    #[arg(long, value_parser = kind::<GqaMode>(), default_value = GqaMode::WholeGroup.name())]
    gqa: GqaMode,
    /// Calibration mode (default: the preset's).
    #[arg(long, value_parser = kind::<CalibMode>())]
    calib_mode: Option<CalibMode>,
    /// Calibration text.
    #[arg(long, value_parser = kind::<CalibSource>(), default_value = CalibSource::BrownFiction.name())]
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
    /// Round every pruned module's kept size so block-quantized GGUF types can store its rows:
    /// channels a multiple of N, heads × head_dim a multiple of N (in the GQA mode's units), 32
    /// for q8_0, 256 for k-quants. To the nearest multiple, never 0, never above the dense size (a
    /// module with no multiple below its size stays whole); the allocation's solver counts the
    /// rounded shapes. 1: no alignment.
    #[arg(long, default_value_t = 1)]
    align: usize,
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
    /// Also export the pruned model as `data/runs/<run>/model-<TYPE>.gguf` for llama.cpp (f32, f16,
    /// bf16, q8_0; q8_0 needs `--align 32`), or `none`. Default: f16 where the model can be exported
    /// (a tokenizer llama.cpp cannot reproduce is a warning then, not an error).
    #[arg(long, value_parser = ["f32", "f16", "bf16", "q8_0", "none"])]
    gguf: Option<String>,
    #[command(flatten)]
    tune: crate::tune::PipelineTuneArgs,
}

impl PipelineArgs {
    /// The scorer, allocation, recovery and calibration mode: each flag, else the preset's.
    fn recipe(&self) -> (ScorerKind, AllocationKind, RecoveryKind, CalibMode) {
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
                "--alpha must be a finite temperature of at least 0 (a negative one reverses the allocation), got \
                {alpha}"
            );
        }
        ensure!(
            allocation == AllocationKind::Cosine || (a.pruned_layers.is_none() && a.alpha.is_none()),
            "--pruned-layers and --alpha set the cosine allocation; --allocation {} does not use them",
            allocation.name()
        );
        ensure!(a.align >= 1, "--align must be at least 1 (1: no alignment), got {}", a.align);
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
            allocation,
            scorer,
            keep_lowest: if a.keep_lowest == 0.0 { KeepLowest::None } else { KeepLowest::Fraction(a.keep_lowest) },
            recovery,
            gqa: a.gqa,
            lstsq: slim_recover::LstsqConfig { ridge_rel: a.lstsq_ridge, ..slim_recover::LstsqConfig::standard() },
            calib_mode,
            align: a.align,
        })
    }

    /// The run name derived from the settings: model, scorer, allocation, target, recovery,
    /// GQA unit and calibration mode, and `-align<N>` when aligned.
    fn default_run_name(&self) -> String {
        let (scorer, allocation, recovery, mode) = self.recipe();
        let align = if self.align > 1 { format!("-align{}", self.align) } else { String::new() };
        format!(
            "{}-{}-{}-{:.0}pct-{}-{}-{}{align}",
            self.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
            scorer.name(),
            allocation.name(),
            self.target * 100.0,
            recovery.name(),
            self.gqa.name(),
            mode.name(),
        )
    }

    /// Checks, from the model's config alone, that the calibration windows fit the model's
    /// context and the machine's memory (`Footprint::pipeline`: one layer, its statistics and
    /// every window's activations of one layer at a time; the Taylor capture also every layer's
    /// input and a chunk's logits).
    /// Also checks the settings that depend on the model (`--align`).
    fn check_sizes(&self, g: &GlobalArgs) -> Result<()> {
        use crate::preflight::{check_fits, check_positions, Footprint};
        let cfg = slim_checkpoint::ModelConfig::load(&self.model)?;
        self.config()?.check_model(&cfg)?;
        check_positions(&cfg, self.calib_len, &format!("--calib-len {}", self.calib_len))?;
        let fp = Footprint::new(&cfg, g.backend);
        let (scorer, _, recovery, _) = self.recipe();
        // The pipeline reads one layer at a time: the whole model's size does not count.
        let lstsq = recovery == RecoveryKind::Lstsq;
        let peak = fp.pipeline(self.calib_windows, self.calib_len, scorer.needs_gradients(), lstsq);
        check_fits(&format!("--calib-windows {} × --calib-len {}", self.calib_windows, self.calib_len), peak)
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
            let lines = {
                let store = p.store()?;
                explain_pipeline(&ModelSource::open_in(&p.model, &store)?, &cfg, &store, &g.data_root)?
            };
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
    let force = a.stage;
    a.p.check_sizes(g)?;
    let opts = RunOptions { progress: progress(g), force: Some(force), verify_reused: a.p.verify_reused };
    let model = ModelSource::open_in(&a.p.model, &store)?;
    let out = dispatch(g.backend, StageJob { model: &model, cfg: &cfg, store: &store, data_root: &g.data_root, opts })?;
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
    let tune = a.tune.request(&g.data_root)?;
    a.p.check_sizes(g)?;
    let store = a.p.store()?;
    let model = ModelSource::open_in(&a.p.model, &store)?;
    run.prepare()?;
    let opts = RunOptions { progress: progress(g), force: None, verify_reused: a.p.verify_reused };
    let req = RunRequest {
        model: &model,
        cfg: &cfg,
        evals: &evals,
        eval_windows: a.eval_windows,
        run: &run,
        backend: g.backend.name(),
        data_root: &g.data_root,
        tune: tune.as_ref(),
    };
    let summary = dispatch(g.backend, Job { req: &req, store: &store, opts })?;
    eprint!("{}", stage_table(&summary.stages));
    if a.report {
        let path = crate::report::write_for_runs(&[run.path().to_path_buf()], &run.report_dir())?;
        tracing::info!("report written to {}", path.display());
    }
    let gguf = a.gguf.as_deref().unwrap_or("f16");
    if gguf != "none" {
        let ty = slim_gguf::export_type(gguf)?;
        let out = run.gguf_path(gguf);
        // The export is keyed by the surgery entry it was made from (a stamp beside it): a rerun
        // whose pruned model did not change reads no weight for it.
        let stamp = out.with_extension("gguf.source");
        let final_entry = summary.tune.as_ref().map_or(summary.cache_entry, |t| t.entry);
        let source = format!("{final_entry} {gguf}\n");
        let up_to_date = out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == source);
        let exported = if up_to_date {
            tracing::info!("the GGUF export {} is up to date (from cache entry {final_entry})", out.display());
            eprintln!("run it in llama.cpp: {}", crate::export::llama_cpp_command(&out));
            None
        } else {
            let _ = std::fs::remove_file(&stamp);
            Some(slim_gguf::export_gguf(&run.model_dir(), &out, ty, true))
        };
        match exported {
            None => {}
            Some(Ok(s)) => {
                slim_fs::write_atomic(&stamp, source.as_bytes())?;
                tracing::info!(
                    "exported the pruned model for llama.cpp: {} ({} GGUF, {:.1} MB)",
                    out.display(),
                    s.architecture,
                    s.bytes as f64 / 1e6
                );
                eprintln!("run it in llama.cpp: {}", crate::export::llama_cpp_command(&out));
            }
            Some(Err(e)) if a.gguf.is_none() => {
                tracing::warn!("no GGUF export (pass --gguf none to skip it): {e:#}");
            }
            Some(Err(e)) => return Err(e.context(format!("--gguf {gguf}"))),
        }
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
    fn every_setting_has_one_name_used_by_keys_the_command_line_and_help() {
        slim_artifact::check_kind::<ScorerKind>();
        slim_artifact::check_kind::<RecoveryKind>();
        slim_artifact::check_kind::<AllocationKind>();
        slim_artifact::check_kind::<GqaMode>();
        slim_artifact::check_kind::<CalibMode>();
        slim_artifact::check_kind::<CalibSource>();
        slim_artifact::check_kind::<Stage>();
        slim_artifact::check_kind::<slim_model::BackendKind>();
        // The command line takes exactly the names the keys hold.
        for s in ScorerKind::ALL {
            assert_eq!(config(&["--scorer", s.name()]).scorer, *s);
        }
        for r in RecoveryKind::ALL {
            assert_eq!(config(&["--recovery", r.name()]).recovery, *r);
        }
        for m in CalibMode::ALL {
            assert_eq!(config(&["--calib-mode", m.name()]).calib_mode, *m);
        }
        assert_eq!(config(&["--gqa", "per-group"]).gqa, GqaMode::PerGroup);
        assert_eq!(config(&["--calib-source", "ptb-train"]).calib.source, CalibSource::PtbTrain);
        let err = Wrap::try_parse_from(["x", "--scorer", "best"]).err().unwrap().to_string();
        assert!(err.contains("invalid value 'best'") && err.contains("wanda-sp"), "{err}");
    }

    #[test]
    fn presets_set_the_recipe_and_each_flag_overrides_it() {
        assert_eq!(config(&[]), PipelineConfig::paper(0.2, GqaMode::WholeGroup), "the defaults are the paper's recipe");
        let c = config(&["--preset", "slimllm-lstsq"]);
        assert_eq!(
            (c.scorer, c.allocation, c.recovery, c.calib_mode),
            (ScorerKind::SlimLlm, AllocationKind::Cosine, RecoveryKind::Lstsq, CalibMode::Sequential)
        );
        assert_eq!(c.lstsq.ridge_rel, 1.0);
        let c = config(&["--preset", "slimllm-lstsq", "--calib-mode", "dense", "--lstsq-ridge", "0.1"]);
        assert_eq!((c.recovery, c.calib_mode, c.lstsq.ridge_rel), (RecoveryKind::Lstsq, CalibMode::Dense, 0.1));
    }

    #[test]
    fn align_reaches_the_config_and_the_run_name() {
        let wrap = |argv: &[&str]| Wrap::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).unwrap();
        assert_eq!(config(&[]).align, 1);
        assert_eq!(config(&["--align", "32"]).align, 32);
        let err = wrap(&["--align", "0"]).p.config().unwrap_err().to_string();
        assert!(err.contains("--align must be at least 1"), "{err}");
        let name = wrap(&["--align", "256"]).p.default_run_name();
        assert!(name.ends_with("-whole-group-sequential-align256"), "{name}");
        assert!(wrap(&[]).p.default_run_name().ends_with("-whole-group-sequential"));
    }
}
