//! llama.cpp's throughput beside `slimllm bench`'s (`cargo xtask bench decode|prefill`): `llama-bench` of a stock
//! llama.cpp build (`cargo xtask llamacpp build`, data/tools/llamacpp) on a GGUF export of the same model and weight
//! type, the same threads, generating the same number of tokens after a prompt of the same length (`-d`), or
//! processing a prompt of the same length (`-p`; llama.cpp computes the last position's logits, as
//! `slimllm bench --logits last` does).

use anyhow::{format_err, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{pipeline::slimllm, util};

/// A prepared llama-bench run.
pub struct LlamaBench {
    bin: PathBuf,
    gguf: PathBuf,
    ty: String,
    work: Work,
    threads: usize,
}

/// What llama-bench measures.
pub enum Work {
    /// `tokens` generated one at a time after `depth` cached ones.
    Decode { tokens: usize, depth: String },
    /// One prompt of `len` tokens.
    Prompt { len: usize },
}

impl LlamaBench {
    /// `None` when llama.cpp is not built; else exports `model` as a GGUF of type `ty` (once, kept under
    /// data/bench/llamacpp/) for runs of `work` on `threads` threads.
    pub fn prepare(root: &Path, model: &str, ty: &str, work: Work, threads: usize) -> anyhow::Result<Option<Self>> {
        let bin = root.join("data/tools/llamacpp/build/bin/llama-bench");
        if !bin.is_file() {
            println!("llama.cpp is not built ({} missing; `cargo xtask llamacpp build`): slimllm alone", bin.display());
            return Ok(None);
        }
        let dir = root.join("data/bench/llamacpp");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = Path::new(model).file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
        let gguf = dir.join(format!("{name}-{ty}.gguf"));
        if !gguf.is_file() {
            let mut cmd = slimllm();
            cmd.args(["--quiet", "export", "--model", model, "--type", ty, "--out"]).arg(&gguf);
            util::run_capture(&mut cmd, root)?;
        }
        Ok(Some(Self { bin, gguf, ty: ty.into(), work, threads }))
    }

    /// What runs, for the summary line.
    pub fn describe(&self) -> String {
        format!("llama-bench, {} GGUF, {} threads", self.ty, self.threads)
    }

    /// One llama-bench run (3 repetitions): its mean tokens/s, generated or of the prompt.
    pub fn run(&self, root: &Path) -> anyhow::Result<f64> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-m").arg(&self.gguf);
        match &self.work {
            Work::Decode { tokens, depth } => cmd.args(["-p", "0", "-n", &tokens.to_string(), "-d", depth]),
            Work::Prompt { len } => cmd.args(["-p", &len.to_string(), "-n", "0"]),
        };
        cmd.args(["-t", &self.threads.to_string(), "-r", "3", "-o", "jsonl"]);
        let out = util::run_capture(&mut cmd, root)?;
        let generated = matches!(self.work, Work::Decode { .. });
        tokens_per_s(&out, generated).ok_or_else(|| format_err!("llama-bench printed no result:\n{out}"))
    }
}

/// `avg_ts` of the last JSONL record of llama-bench's output that generated tokens (`n_gen` > 0) when `generated`,
/// else of the last that processed a prompt only (`n_prompt` > 0, `n_gen` 0).
fn tokens_per_s(stdout: &str, generated: bool) -> Option<f64> {
    stdout.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let (prompt, gen) = (v.get("n_prompt")?.as_u64()?, v.get("n_gen")?.as_u64()?);
        let wanted = if generated { gen > 0 } else { prompt > 0 && gen == 0 };
        wanted.then_some(())?;
        v.get("avg_ts")?.as_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::tokens_per_s;

    #[test]
    fn reads_the_generation_record() {
        let out = "noise\n{\"n_prompt\": 0, \"n_gen\": 64, \"avg_ts\": 48.25, \"stddev_ts\": 0.5}\n";
        assert_eq!(tokens_per_s(out, true), Some(48.25));
        assert_eq!(tokens_per_s(out, false), None);
        assert_eq!(tokens_per_s("{\"n_prompt\": 128, \"n_gen\": 0, \"avg_ts\": 900.0}", true), None);
        assert_eq!(tokens_per_s("no json", true), None);
    }

    #[test]
    fn reads_the_prompt_record() {
        let out =
            "{\"n_prompt\": 1024, \"n_gen\": 0, \"avg_ts\": 503.5}\n{\"n_prompt\": 0, \"n_gen\": 64, \"avg_ts\": 48.2}";
        assert_eq!(tokens_per_s(out, false), Some(503.5));
        assert_eq!(tokens_per_s(out, true), Some(48.2));
    }
}
