//! [`run_and_evaluate`]: one whole `slimllm pipeline run`: the pruning, perplexity of the
//! dense and the pruned model (cached like every stage), the pruned model copied into the
//! run folder, and the [`RunSummary`] written beside it.

use crate::keys::ModelSource;
use crate::run::{eval_ppl_cached, run_pipeline, EvalInput};
use crate::runs::RunDir;
use crate::summary::{PplPair, RunSummary, TuneSummary, EVAL_SEQ_LEN, SUMMARY_FORMAT};
use crate::tune::TuneRequest;
use crate::{PipelineConfig, RunOptions};
use anyhow::Result;
use burn_tensor::backend::Backend;
use slim_artifact::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Everything a run needs besides the store, the device and the options. Build it (model
/// hashed, texts loaded, run folder prepared) before any long work, so that bad input
/// fails in seconds.
pub struct RunRequest<'a> {
    /// The dense model.
    pub model: &'a ModelSource,
    /// What to compute.
    pub cfg: &'a PipelineConfig,
    /// Perplexity texts evaluated before and after (none: no evaluation).
    pub evals: &'a [EvalInput],
    /// Evaluate only the first N windows of each text.
    pub eval_windows: Option<usize>,
    /// Where the run's summary and model go ([`RunDir::prepare`]d).
    pub run: &'a RunDir,
    /// Backend name recorded in the summary.
    pub backend: &'a str,
    /// The data folder (calibration text).
    pub data_root: &'a Path,
    /// Recovery fine-tuning after the surgery (`--tune`).
    pub tune: Option<&'a TuneRequest>,
}

/// Runs the pipeline, evaluates, places the pruned model in the run folder and writes the
/// run's `summary.json`; returns the summary.
pub fn run_and_evaluate<B: Backend>(
    req: &RunRequest<'_>,
    store: &Store,
    device: &B::Device,
    opts: &RunOptions,
) -> Result<RunSummary> {
    let t = Instant::now();
    let out = run_pipeline::<B>(req.model, req.cfg, store, req.data_root, device, opts)?;
    let pruning_seconds = t.elapsed().as_secs_f64();
    let mut report = out.report;
    let pcfg = slim_eval::PplConfig {
        seq_len: EVAL_SEQ_LEN,
        batch: 8,
        max_windows: req.eval_windows,
        progress: opts.progress,
    };
    let mut ppl = BTreeMap::new();
    for input in req.evals {
        let (m, mkey) = (req.model.dir(), req.model.key());
        let before = eval_ppl_cached::<B>(store, &mut report, m, mkey, input, &pcfg, device)?;
        let after = eval_ppl_cached::<B>(store, &mut report, &out.pruned_dir, out.pruned_key, input, &pcfg, device)?;
        tracing::info!(
            "{}: perplexity {:.3} → {:.3} ({} windows)",
            input.data.name(),
            before.ppl,
            after.ppl,
            after.windows
        );
        ppl.insert(input.data.name().to_string(), PplPair { before, after });
    }
    let tuned = match req.tune {
        None => None,
        Some(tr) => {
            let t = crate::tune::tune_cached::<B>(
                store,
                &mut report,
                &out.pruned_dir,
                out.pruned_key,
                tr,
                req.run,
                device,
                opts.progress,
            )?;
            let mut tuned_ppl = BTreeMap::new();
            for input in req.evals {
                let r = eval_ppl_cached::<B>(store, &mut report, &t.dir, t.key, input, &pcfg, device)?;
                let pruned = ppl.get(input.data.name()).map(|p: &PplPair| p.after.ppl);
                tracing::info!(
                    "{}: perplexity after tuning {:.3} (pruned {})",
                    input.data.name(),
                    r.ppl,
                    pruned.map_or("-".into(), |p| format!("{p:.3}"))
                );
                tuned_ppl.insert(input.data.name().to_string(), r);
            }
            Some((t, tuned_ppl))
        }
    };
    req.run.place_model(tuned.as_ref().map_or(&out.pruned_dir, |(t, _)| &t.dir))?;
    let ppl_data = req.evals.first().map(|e| e.data.name().to_string());
    let first = ppl_data.as_ref().and_then(|d| ppl.get(d));
    let summary = RunSummary {
        format: SUMMARY_FORMAT,
        run: req.run.name().as_str().to_string(),
        model: req.model.dir().to_path_buf(),
        model_key: Some(req.model.key()),
        config: req.cfg.clone(),
        backend: req.backend.to_string(),
        params_before: out.params_before,
        params_after: out.params_after,
        removed_fraction: 1.0 - out.params_after as f64 / out.params_before as f64,
        alloc: out.alloc,
        ppl_before: first.map(|p| p.before.ppl),
        ppl_after: first.map(|p| p.after.ppl),
        ppl_data,
        eval_windows: req.eval_windows,
        eval_seq_len: EVAL_SEQ_LEN,
        ppl,
        pruning_seconds,
        stages: report.stages(),
        layers: out.layers,
        layer_importance: out.importance,
        pruned_model: req.run.model_dir(),
        cache_entry: out.pruned_key,
        cache_keys: report.entries(),
        tune: tuned.map(|(t, ppl)| TuneSummary { entry: t.key, log: t.log, ppl }),
    };
    req.run.write_summary(&summary)?;
    tracing::info!("summary written to {}", req.run.summary_path().display());
    Ok(summary)
}
