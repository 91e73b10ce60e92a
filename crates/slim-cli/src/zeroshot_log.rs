//! The `--samples` file of `slimllm eval zeroshot` as an append-only log: one JSON line per
//! scored document, appended after every chunk of documents, so that a killed run keeps
//! what it scored and `--resume` scores only the rest.

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use slim_data::zeroshot::{McDoc, Task};
use slim_eval::zeroshot::Loglik;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a samples file's lines must agree on to be merged: the model that scored them (its content key, as the
/// pipeline's cache computes it), the run's `--limit` and its tasks. Every line records the first two and its task,
/// so that `--resume` can refuse the lines of another model or run instead of merging them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunId {
    /// `slim_pipeline::model_key` of the model directory: config, tokenizer and weights, hashed.
    pub(crate) model_key: String,
    /// `--limit`.
    pub(crate) limit: Option<usize>,
    /// `--tasks`, deduplicated.
    pub(crate) tasks: Vec<Task>,
}

/// One document a run already scored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scored {
    /// The log-likelihood of each request.
    pub(crate) lls: Vec<Loglik>,
    /// The gold choice the line recorded.
    pub(crate) gold: Option<u64>,
    /// Its line in the file (1-based), for messages.
    pub(crate) line: usize,
}

/// Documents a run already scored: (task name, doc_id) → what it scored.
pub(crate) type Prior = HashMap<(String, u64), Scored>;

/// The complete lines of a samples file, each checked against `run`: written for the same model, `--limit` and
/// one of the same tasks, and no document twice. A torn last line (the process was killed while writing it) is cut
/// off, so that appending starts on a fresh line; any other malformed line is an error naming the file and line.
pub(crate) fn read_prior(path: &Path, run: &RunId) -> Result<Prior> {
    let mut prior = Prior::new();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(prior),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..keep]).with_context(|| format!("{} is not UTF-8", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let (task, id) = (v["task"].as_str(), v["doc_id"].as_u64());
        let (lls, greedy) = (v["lls"].as_array(), v["greedy"].as_array());
        let (Some(task), Some(id), Some(lls), Some(greedy)) = (task, id, lls, greedy) else {
            bail!("{}: needs task, doc_id, lls and greedy", at());
        };
        check_line(&v, task, run).with_context(|| {
            format!("{}: --resume would merge scores that this run did not make; use another --samples file", at())
        })?;
        ensure!(lls.len() == greedy.len(), "{}: {} lls but {} greedy flags", at(), lls.len(), greedy.len());
        let l = lls
            .iter()
            .zip(greedy)
            .map(|(ll, g)| Some(Loglik { ll: ll.as_f64()?, greedy: g.as_bool()? }))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{}: a non-numeric log-likelihood or flag", at()))?;
        let scored = Scored { lls: l, gold: v["gold"].as_u64(), line: n + 1 };
        if let Some(first) = prior.insert((task.to_string(), id), scored) {
            bail!(
                "{}: {task} document {id} again (first on line {}); a samples file holds each document once",
                at(),
                first.line
            );
        }
    }
    // Cut the torn line only once the file is known to be this run's: a refused file is left as it was.
    if keep < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_len(keep as u64).with_context(|| format!("cutting the torn last line of {}", path.display()))?;
        tracing::warn!("{}: cut a torn last line ({} bytes)", path.display(), bytes.len() - keep);
    }
    Ok(prior)
}

/// Whether one line was written by `run`: same model, same `--limit`, one of its tasks.
fn check_line(v: &serde_json::Value, task: &str, run: &RunId) -> Result<()> {
    let Some(model) = v["model"].as_str() else {
        bail!(
            "the line does not say which model scored it (written by an older slimllm or by another tool), so it \
             cannot be told apart from another model's"
        );
    };
    ensure!(
        model == run.model_key,
        "scored by the model with content key {model}, but --model has key {} (another model, or changed weights)",
        run.model_key
    );
    let limit = &v["limit"];
    let theirs = if limit.is_null() { None } else { Some(limit.as_u64().context("`limit` is not a number")?) };
    ensure!(
        theirs == run.limit.map(|l| l as u64),
        "written by a run with {}, this run has {}",
        theirs.map_or("no --limit".to_string(), |l| format!("--limit {l}")),
        run.limit.map_or("no --limit".to_string(), |l| format!("--limit {l}"))
    );
    ensure!(
        run.tasks.iter().any(|t| t.name() == task),
        "a {task} document, but this run's --tasks are {}",
        run.tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
    );
    Ok(())
}

/// The samples file, opened for appending (`resume`) or truncated.
pub(crate) struct SampleLog {
    path: PathBuf,
    file: std::fs::File,
    run: RunId,
}

impl SampleLog {
    pub(crate) fn open(path: &Path, resume: bool, run: RunId) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(path)
            .with_context(|| format!("--samples {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file, run })
    }

    /// Appends one line per document and syncs, so that the lines survive a kill.
    pub(crate) fn append(&mut self, task: Task, docs: &[&McDoc], scores: &[Vec<Loglik>]) -> Result<()> {
        let mut buf = Vec::new();
        for (d, l) in docs.iter().zip(scores) {
            let line = json!({
                "task": task.name(), "doc_id": d.doc_id, "gold": d.gold,
                "lls": l.iter().map(|x| x.ll).collect::<Vec<_>>(),
                "greedy": l.iter().map(|x| x.greedy).collect::<Vec<_>>(),
                "model": self.run.model_key, "limit": self.run.limit,
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

    fn run() -> RunId {
        RunId { model_key: "k1".into(), limit: Some(5), tasks: vec![Task::Piqa, Task::Boolq] }
    }

    const LINE3: &str =
        r#"{"task":"piqa","doc_id":3,"lls":[-1.5,-2.0],"greedy":[true,false],"gold":0,"model":"k1","limit":5}"#;

    #[test]
    fn a_torn_last_line_is_cut_and_the_complete_lines_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.jsonl");
        std::fs::write(&p, format!("{LINE3}\n{{\"task\":\"piqa\",\"doc_id\":4,\"ll")).unwrap();
        let prior = read_prior(&p, &run()).unwrap();
        assert_eq!(prior.len(), 1);
        let l = &prior[&("piqa".to_string(), 3)].lls;
        assert_eq!((l[0].ll, l[0].greedy, l[1].ll, l[1].greedy), (-1.5, true, -2.0, false));
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"), "the torn line is gone");
        assert!(read_prior(&tmp.path().join("none.jsonl"), &run()).unwrap().is_empty());
        std::fs::write(&p, "{\"task\":\"piqa\"}\n").unwrap();
        let e = read_prior(&p, &run()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("doc_id"), "{e}");
    }

    /// Lines of another model, limit or task, or without a model, are refused, naming the line and the
    /// difference; the file is left untouched.
    #[test]
    fn lines_of_another_run_or_twice_the_same_document_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.jsonl");
        let cases = [
            (LINE3.replace("\"k1\"", "\"k2\""), "content key k2, but --model has key k1"),
            (LINE3.replace(",\"model\":\"k1\"", ""), "does not say which model"),
            (LINE3.replace("\"limit\":5", "\"limit\":null"), "no --limit, this run has --limit 5"),
            (LINE3.replace("piqa", "hellaswag"), "a hellaswag document, but this run's --tasks are piqa,boolq"),
            (LINE3.replace("doc_id\":3", "doc_id\":4"), ""),
        ];
        for (line, want) in cases {
            let text = format!("{LINE3}\n{line}\n{{\"torn");
            std::fs::write(&p, &text).unwrap();
            match read_prior(&p, &run()) {
                Ok(prior) => assert!(want.is_empty() && prior.len() == 2, "{line}"),
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(!want.is_empty() && e.contains("s.jsonl line 2") && e.contains(want), "{e}");
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "a refused file is left as it was");
                }
            }
        }
        std::fs::write(&p, format!("{LINE3}\n{LINE3}\n")).unwrap();
        let e = read_prior(&p, &run()).unwrap_err().to_string();
        assert!(e.contains("s.jsonl line 2: piqa document 3 again (first on line 1)"), "{e}");
    }

    #[test]
    fn appended_lines_carry_the_run_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s.jsonl");
        let doc = Task::Piqa.parse_line(r#"{"doc_id":9,"doc":{"goal":"g","sol1":"a","sol2":"b","label":1}}"#).unwrap();
        let mut log = SampleLog::open(&p, false, run()).unwrap();
        let lls = vec![Loglik { ll: -1.0, greedy: false }, Loglik { ll: -0.5, greedy: true }];
        log.append(Task::Piqa, &[&doc], std::slice::from_ref(&lls)).unwrap();
        let prior = read_prior(&p, &run()).unwrap();
        assert_eq!(prior[&("piqa".to_string(), 9)], Scored { lls, gold: Some(1), line: 1 });
        let other = RunId { model_key: "k2".into(), ..run() };
        assert!(read_prior(&p, &other).is_err());
    }
}
