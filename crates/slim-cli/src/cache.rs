//! `slimllm cache verify [--repair]` and `slimllm cache gc`: keeping the artifact store honest.

use anyhow::{Context, Result};
use slim_artifact::Store;
use slim_data::EvalText;
use slim_pipeline::{referenced_entries, PipelineConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Cache commands.
#[derive(clap::Subcommand)]
pub enum CacheCommand {
    /// Re-hash every entry against its manifest and list corrupted or incomplete ones.
    Verify {
        /// Remove the entries found broken (the next run rebuilds them).
        #[arg(long)]
        repair: bool,
        /// Cache root (default `$SLIMLLM_CACHE` or `data/cache`).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Remove entries that no run under `--runs` refers to, and stale temporary folders.
    Gc {
        /// Folder of runs whose `summary.json` files say what to keep.
        #[arg(long, default_value = "data/runs")]
        runs: PathBuf,
        /// List what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
        /// Cache root (default `$SLIMLLM_CACHE` or `data/cache`).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

pub fn run(c: CacheCommand) -> Result<()> {
    match c {
        CacheCommand::Verify { repair, cache } => {
            let store = Store::open(&cache.unwrap_or_else(Store::default_root))?;
            let problems = store.verify()?;
            for p in &problems {
                println!("{p}");
            }
            let n = store.entries()?.len();
            if repair {
                let broken: BTreeSet<_> = problems.iter().map(|p| (p.stage.clone(), p.key)).collect();
                for (stage, key) in &broken {
                    store.remove(stage, key)?;
                }
                println!("{n} entries checked, {} broken and removed", broken.len());
            } else {
                println!(
                    "{n} entries checked, {} problems{}",
                    problems.len(),
                    if problems.is_empty() { "" } else { " (rerun with --repair to remove them)" }
                );
            }
            anyhow::ensure!(repair || problems.is_empty(), "the cache has {} problems", problems.len());
            Ok(())
        }
        CacheCommand::Gc { runs, dry_run, cache } => {
            let store = Store::open(&cache.unwrap_or_else(Store::default_root))?;
            let keep = kept_by_runs(&store, &runs)?;
            let all = store.entries()?;
            let drop: Vec<_> = all.iter().filter(|e| !keep.contains(*e)).cloned().collect();
            if dry_run {
                for (stage, key) in &drop {
                    println!("would remove {stage}/{key}");
                }
            } else {
                store.gc(&keep)?;
                store.clean_tmp(std::time::Duration::from_secs(3600))?;
            }
            println!(
                "{} entries, {} referenced by runs, {} {}",
                all.len(),
                keep.len(),
                drop.len(),
                if dry_run { "would be removed" } else { "removed" }
            );
            Ok(())
        }
    }
}

/// Entries referred to by the runs under `runs` (each `<run>/summary.json`).
fn kept_by_runs(store: &Store, runs: &Path) -> Result<BTreeSet<(String, slim_artifact::Key)>> {
    let mut keep = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(runs) else {
        return Ok(keep);
    };
    for e in dir.flatten() {
        let path = e.path().join("summary.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let s: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let cfg: PipelineConfig = match serde_json::from_value(s["config"].clone()) {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!("{}: no usable pipeline config ({err}); its entries are not protected", path.display());
                continue;
            }
        };
        let model = PathBuf::from(s["model"].as_str().unwrap_or_default());
        // Evaluations: the requested window count when recorded, else both readings of
        // the scored count (all windows, or exactly that many).
        let mut evals = Vec::new();
        for (name, v) in s["ppl"].as_object().into_iter().flatten() {
            let Ok(data) = name.parse::<EvalText>() else {
                continue;
            };
            let seq_len = 128;
            match s.get("eval_windows") {
                Some(w) => evals.push((data, seq_len, w.as_u64().map(|w| w as usize))),
                None => {
                    evals.push((data, seq_len, None));
                    if let Some(w) = v["after"]["windows"].as_u64() {
                        evals.push((data, seq_len, Some(w as usize)));
                    }
                }
            }
        }
        match referenced_entries(&model, &cfg, store, &evals) {
            Ok(k) => keep.extend(k),
            Err(err) => {
                tracing::warn!("{}: {err:#}; its entries are not protected", path.display())
            }
        }
    }
    Ok(keep)
}
