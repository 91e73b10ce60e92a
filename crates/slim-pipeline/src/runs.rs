//! Run folders: `<data root>/runs/<run>/` holding `summary.json`, the pruned `model/` and
//! the `report/`. This module is the one place that builds their paths. A run name is one
//! plain path component, so a run can never write outside the runs root; a folder the tool
//! did not make is never taken over, and a run's model is a copy of the cache entry's,
//! never a link to it, so editing one cannot change the other.

use crate::summary::RunSummary;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

/// File that marks a folder as a run folder made by slimllm.
const MARKER: &str = ".slimllm-run";

/// A checked run name: one path component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunName(String);

impl RunName {
    /// Checks `name`: non-empty, at most 200 bytes, no `/` or `\`, no control characters,
    /// not starting with `.` (so neither `.` nor `..` nor a hidden name).
    pub fn new(name: &str) -> Result<RunName> {
        ensure!(!name.is_empty(), "--run: a run name cannot be empty");
        ensure!(name.len() <= 200, "--run `{name}`: a run name has at most 200 bytes, this one {}", name.len());
        ensure!(
            !name.contains(['/', '\\']),
            "--run `{name}`: a run name is a name, not a path (no `/` or `\\`); runs are kept under the runs folder"
        );
        ensure!(!name.starts_with('.'), "--run `{name}`: a run name cannot start with `.`");
        ensure!(!name.chars().any(char::is_control), "--run {name:?}: a run name cannot hold control characters");
        Ok(RunName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The folder that holds run folders: `<data root>/runs` unless given.
#[derive(Clone, Debug)]
pub struct RunsRoot(PathBuf);

impl RunsRoot {
    /// `<data_root>/runs`.
    pub fn under(data_root: &Path) -> RunsRoot {
        RunsRoot(data_root.join("runs"))
    }

    /// A runs folder given as is (`slimllm cache gc --runs DIR`).
    pub fn at(path: &Path) -> RunsRoot {
        RunsRoot(path.to_path_buf())
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The folder of run `name`.
    pub fn run(&self, name: &RunName) -> RunDir {
        RunDir { dir: self.0.join(name.as_str()), name: name.clone() }
    }

    /// Every `<run>/summary.json` under the root, sorted by path, each with its parse
    /// result. An absent root is an error that names it.
    pub fn summaries(&self) -> Result<Vec<(PathBuf, Result<RunSummary>)>> {
        let rd = std::fs::read_dir(&self.0).with_context(|| format!("reading the runs folder {}", self.0.display()))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.with_context(|| format!("reading the runs folder {}", self.0.display()))?;
            let path = e.path().join("summary.json");
            if path.is_file() {
                let s = RunSummary::read(&path);
                out.push((path, s));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// One run's folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    dir: PathBuf,
    name: RunName,
}

impl RunDir {
    /// The run's name.
    pub fn name(&self) -> &RunName {
        &self.name
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `summary.json`.
    pub fn summary_path(&self) -> PathBuf {
        self.dir.join("summary.json")
    }

    /// The run's copy of the pruned model.
    pub fn model_dir(&self) -> PathBuf {
        self.dir.join("model")
    }

    /// The run's GGUF export of the pruned model, with 2-D weights of type `ty` (`f16`, `q8_0`, …):
    /// `model-<ty>.gguf` beside the model directory.
    pub fn gguf_path(&self, ty: &str) -> PathBuf {
        self.dir.join(format!("model-{ty}.gguf"))
    }

    /// The folder `--report` writes into.
    pub fn report_dir(&self) -> PathBuf {
        self.dir.join("report")
    }

    /// Creates the run folder, or checks that the existing one is a run folder (it holds the
    /// marker, or a summary this tool wrote, or nothing): a folder someone else made is
    /// never taken over. Called before any long work.
    pub fn prepare(&self) -> Result<()> {
        let d = &self.dir;
        if d.exists() {
            ensure!(d.is_dir(), "run folder {} exists and is not a folder", d.display());
            let marked = d.join(MARKER).is_file();
            let ours = marked
                || RunSummary::read(&self.summary_path()).is_ok()
                || std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))?.next().is_none();
            if !ours {
                bail!(
                    "{} exists and is not a slimllm run folder (no {MARKER} marker, no summary.json of a run); \
                     choose another --run, or move that folder away",
                    d.display()
                );
            }
            if marked {
                return Ok(());
            }
        }
        std::fs::create_dir_all(d).with_context(|| format!("creating the run folder {}", d.display()))?;
        slim_fs::write_atomic(&d.join(MARKER), b"made by slimllm pipeline run\n")
            .with_context(|| format!("marking {} as a run folder", d.display()))
    }

    /// Puts a copy of the model directory `src` (a cache entry's) at [`RunDir::model_dir`],
    /// replacing the run's previous model atomically. Copies, not links: the copies are the
    /// user's, writable, and editing them leaves the cache alone (`std::fs::copy` clones the
    /// extents where the file system can).
    pub fn place_model(&self, src: &Path) -> Result<()> {
        let dst = self.model_dir();
        let tmp = self.dir.join(format!(".model.tmp-{}", unique()));
        let copied = copy_dir(src, &tmp);
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Another run of the same name may be placing its (identical) copy at the same moment:
        // move whatever is in the way aside and retry, so that one complete copy ends up there.
        for _ in 0..8 {
            match std::fs::rename(&tmp, &dst) {
                Ok(()) => return Ok(()),
                // Something is in the way, or was a moment ago (another run may have moved it aside
                // between the rename and this check): move it aside if it is still there, and retry.
                Err(e)
                    if dst.exists()
                        || matches!(
                            e.kind(),
                            std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
                        ) =>
                {
                    let aside = self.dir.join(format!(".model.old-{}", unique()));
                    if std::fs::rename(&dst, &aside).is_ok() {
                        let _ = std::fs::remove_dir_all(&aside);
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e).with_context(|| format!("moving {} into place", dst.display()));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
        bail!("moving {} into place: the folder keeps changing", dst.display())
    }

    /// Writes `summary.json` atomically.
    pub fn write_summary(&self, s: &RunSummary) -> Result<()> {
        Ok(slim_artifact::write_json_atomic(&self.summary_path(), s)?)
    }
}

/// Copies the regular files and folders of `src` into a new folder `dst`, writable by the user.
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e.with_context(|| format!("reading {}", src.display()))?;
        let ft = e.file_type().with_context(|| format!("reading {}", e.path().display()))?;
        let to = dst.join(e.file_name());
        if ft.is_dir() {
            // A tuned model's `adapter/`.
            copy_dir(&e.path(), &to)?;
            continue;
        }
        ensure!(ft.is_file(), "{}: not a regular file or folder; a model folder holds only those", e.path().display());
        std::fs::copy(e.path(), &to).with_context(|| format!("copying {} to {}", e.path().display(), to.display()))?;
        let mut perm = std::fs::metadata(&to).with_context(|| format!("reading {}", to.display()))?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&to, perm).with_context(|| format!("making {} writable", to.display()))?;
    }
    Ok(())
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_names() {
        for bad in ["", ".", "..", "../escape", "/some/dir", "a/b", "a\\b", ".hidden", "tab\there"] {
            assert!(RunName::new(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["smollm2-135m-slimllm-cosine-20pct", "run 1", "é"] {
            assert_eq!(RunName::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn a_folder_the_tool_did_not_make_is_never_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let root = RunsRoot::under(tmp.path());
        let dir = root.run(&RunName::new("x").unwrap());
        std::fs::create_dir_all(dir.model_dir()).unwrap();
        std::fs::write(dir.model_dir().join("precious.bin"), b"weeks of training").unwrap();
        let err = dir.prepare().unwrap_err().to_string();
        assert!(err.contains("not a slimllm run folder"), "{err}");
        assert_eq!(std::fs::read(dir.model_dir().join("precious.bin")).unwrap(), b"weeks of training");
    }

    #[test]
    fn the_run_model_is_a_writable_copy_and_replacing_it_keeps_one_complete_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("entry");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("config.json"), b"{}").unwrap();
        let mut perm = std::fs::metadata(src.join("config.json")).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(src.join("config.json"), perm).unwrap();
        let dir = RunsRoot::under(tmp.path()).run(&RunName::new("r").unwrap());
        dir.prepare().unwrap();
        dir.place_model(&src).unwrap();
        dir.place_model(&src).unwrap();
        std::fs::write(dir.model_dir().join("config.json"), b"edited").unwrap();
        assert_eq!(std::fs::read(src.join("config.json")).unwrap(), b"{}", "the edit reached the source");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.starts_with(".model.")), "leftovers: {names:?}");
        dir.prepare().unwrap();
    }
}
