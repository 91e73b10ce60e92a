//! `slimllm cache verify [--repair]` and `slimllm cache gc`: keeping the artifact store honest.

use anyhow::{bail, Context, Result};
use slim_artifact::Store;
use slim_pipeline::RunsRoot;
use std::collections::BTreeSet;
use std::path::PathBuf;

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
    /// Refuses when it finds no run at all (a wrong folder would otherwise empty the cache),
    /// unless told `--all`.
    Gc {
        /// Folder of runs whose `summary.json` files say what to keep (default: `runs` under
        /// `--data-root`, i.e. `$SLIMLLM_DATA/runs` or `data/runs`).
        #[arg(long)]
        runs: Option<PathBuf>,
        /// Remove every entry no run refers to even when no run is found (empties the cache).
        #[arg(long)]
        all: bool,
        /// List what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
        /// Cache root (default `$SLIMLLM_CACHE` or `data/cache`).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

pub fn run(c: CacheCommand, g: &crate::GlobalArgs) -> Result<()> {
    match c {
        CacheCommand::Verify { repair, cache } => {
            let store = Store::open(&cache.unwrap_or_else(Store::default_root))?;
            let problems = store.verify()?;
            for p in &problems {
                println!("{p}");
            }
            // Entries, and the links the store lists as problems where entries should be.
            let mut checked: BTreeSet<_> = store.entries()?.into_iter().collect();
            checked.extend(problems.iter().map(|p| (p.stage.clone(), p.key)));
            let n = checked.len();
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
        CacheCommand::Gc { runs, all, dry_run, cache } => {
            let store = Store::open(&cache.unwrap_or_else(Store::default_root))?;
            let runs = match &runs {
                Some(r) => RunsRoot::at(r),
                None => RunsRoot::under(&g.data_root),
            };
            let keep = kept_by_runs(&runs, all)?;
            let all_entries = store.entries()?;
            let drop: Vec<_> = all_entries.iter().filter(|e| !keep.contains(*e)).cloned().collect();
            if dry_run {
                for (stage, key) in &drop {
                    println!("would remove {stage}/{key}");
                }
            } else {
                store.gc(&keep)?;
                store.clean_tmp(std::time::Duration::from_secs(3600))?;
            }
            let referenced = all_entries.iter().filter(|e| keep.contains(*e)).count();
            println!(
                "{} entries, {referenced} referenced by runs under {}, {} {}",
                all_entries.len(),
                runs.path().display(),
                drop.len(),
                if dry_run { "would be removed" } else { "removed" }
            );
            Ok(())
        }
    }
}

/// The entries the runs under `runs` refer to (each summary's `cache_keys`). Refuses, unless
/// `all`, when the folder is missing or holds no run, and always when a summary cannot be
/// read: in each case gc cannot know what to keep.
fn kept_by_runs(runs: &RunsRoot, all: bool) -> Result<BTreeSet<(String, slim_artifact::Key)>> {
    let mut keep = BTreeSet::new();
    let summaries = match runs.summaries() {
        Ok(s) => s,
        Err(e) if all => {
            tracing::warn!("{e:#}; --all: nothing is kept");
            return Ok(keep);
        }
        Err(e) => {
            return Err(e.context(format!(
                "cache gc keeps what runs refer to and found no runs folder at {}; pass --runs DIR \
                 (or --data-root), or --all to remove every entry",
                runs.path().display()
            )))
        }
    };
    if summaries.is_empty() && !all {
        bail!(
            "cache gc found no run summary under {}, so it would remove every entry; pass --runs DIR \
             (or --data-root), or --all to remove every entry",
            runs.path().display()
        );
    }
    for (path, summary) in summaries {
        let s = summary.with_context(|| {
            format!("cache gc cannot tell what {} refers to; fix or move that run folder", path.display())
        })?;
        if s.format < 2 {
            tracing::warn!(
                "{}: written before runs recorded their cache keys (format {}); nothing of it is kept \
                 (rerun it to keep its entries)",
                path.display(),
                s.format
            );
        }
        keep.extend(s.cache_keys.into_iter().map(|c| (c.stage, c.key)));
    }
    Ok(keep)
}
