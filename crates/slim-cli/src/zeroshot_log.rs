//! The `--samples` file of `slimllm eval zeroshot` as an append-only log: one JSON line per
//! scored document, appended after every chunk of documents, so that a killed run keeps
//! what it scored and `--resume` scores only the rest.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use slim_data::zeroshot::{McDoc, Task};
use slim_eval::zeroshot::Loglik;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Documents a run already scored: (task name, doc_id) → the log-likelihood of each request.
pub(crate) type Prior = HashMap<(String, u64), Vec<Loglik>>;

/// The complete lines of a samples file. A torn last line (the process was killed while
/// writing it) is cut off, so that appending starts on a fresh line; any other malformed
/// line is an error naming the file and line.
pub(crate) fn read_prior(path: &Path) -> Result<Prior> {
    let mut prior = Prior::new();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(prior),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_len(keep as u64).with_context(|| format!("cutting the torn last line of {}", path.display()))?;
        tracing::warn!("{}: cut a torn last line ({} bytes)", path.display(), bytes.len() - keep);
    }
    let text = std::str::from_utf8(&bytes[..keep]).with_context(|| format!("{} is not UTF-8", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        let (task, id) = (v["task"].as_str(), v["doc_id"].as_u64());
        let (lls, greedy) = (v["lls"].as_array(), v["greedy"].as_array());
        let (Some(task), Some(id), Some(lls), Some(greedy)) = (task, id, lls, greedy) else {
            anyhow::bail!("{} line {}: needs task, doc_id, lls and greedy", path.display(), n + 1);
        };
        ensure!(
            lls.len() == greedy.len(),
            "{} line {}: {} lls but {} greedy flags",
            path.display(),
            n + 1,
            lls.len(),
            greedy.len()
        );
        let l = lls
            .iter()
            .zip(greedy)
            .map(|(ll, g)| Some(Loglik { ll: ll.as_f64()?, greedy: g.as_bool()? }))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{} line {}: a non-numeric log-likelihood or flag", path.display(), n + 1))?;
        prior.insert((task.to_string(), id), l);
    }
    Ok(prior)
}

/// The samples file, opened for appending (`resume`) or truncated.
pub(crate) struct SampleLog {
    path: PathBuf,
    file: std::fs::File,
}

impl SampleLog {
    pub(crate) fn open(path: &Path, resume: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(path)
            .with_context(|| format!("--samples {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Appends one line per document and syncs, so that the lines survive a kill.
    pub(crate) fn append(&mut self, task: Task, docs: &[&McDoc], scores: &[Vec<Loglik>]) -> Result<()> {
        let mut buf = Vec::new();
        for (d, l) in docs.iter().zip(scores) {
            let line = json!({
                "task": task.name(), "doc_id": d.doc_id, "gold": d.gold,
                "lls": l.iter().map(|x| x.ll).collect::<Vec<_>>(), "greedy": l.iter().map(|x| x.greedy).collect::<Vec<_>>(),
            });
            writeln!(buf, "{line}")?;
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("--samples {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_the_complete_lines_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.jsonl");
        std::fs::write(&p, "{\"task\":\"piqa\",\"doc_id\":3,\"lls\":[-1.5,-2.0],\"greedy\":[true,false],\"gold\":0}\n{\"task\":\"piqa\",\"doc_id\":4,\"ll").unwrap();
        let prior = read_prior(&p).unwrap();
        assert_eq!(prior.len(), 1);
        let l = &prior[&("piqa".to_string(), 3)];
        assert_eq!((l[0].ll, l[0].greedy, l[1].ll, l[1].greedy), (-1.5, true, -2.0, false));
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"), "the torn line is gone");
        assert!(read_prior(&tmp.path().join("none.jsonl")).unwrap().is_empty());
        std::fs::write(&p, "{\"task\":\"piqa\"}\n").unwrap();
        let e = read_prior(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("doc_id"), "{e}");
    }
}
