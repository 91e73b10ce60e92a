//! llama.cpp's decode throughput beside `slimllm bench`'s (`cargo xtask bench decode`): `llama-bench` of a stock
//! llama.cpp build (`cargo xtask llamacpp build`, data/tools/llamacpp) on a GGUF export of the same model and weight
//! type, the same threads, generating the same number of tokens after a prompt of the same length (`-d`).

use anyhow::{format_err, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{pipeline::slimllm, util};

/// A prepared llama-bench run.
pub struct LlamaBench {
    bin: PathBuf,
    gguf: PathBuf,
    ty: String,
    tokens: usize,
    depth: String,
    threads: usize,
}

impl LlamaBench {
    /// `None` when llama.cpp is not built; else exports `model` as a GGUF of type `ty` (once, kept under
    /// data/bench/llamacpp/) for a run of `tokens` generated tokens after `depth` cached ones on `threads` threads.
    pub fn prepare(
        root: &Path,
        model: &str,
        ty: &str,
        tokens: usize,
        depth: &str,
        threads: usize,
    ) -> anyhow::Result<Option<Self>> {
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
        Ok(Some(Self { bin, gguf, ty: ty.into(), tokens, depth: depth.into(), threads }))
    }

    /// What runs, for the summary line.
    pub fn describe(&self) -> String {
        format!("llama-bench, {} GGUF, {} threads", self.ty, self.threads)
    }

    /// One llama-bench run (3 repetitions): its mean generation tokens/s.
    pub fn run(&self, root: &Path) -> anyhow::Result<f64> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-m").arg(&self.gguf);
        cmd.args(["-p", "0", "-n", &self.tokens.to_string(), "-d", &self.depth, "-t", &self.threads.to_string()]);
        cmd.args(["-r", "3", "-o", "jsonl"]);
        let out = util::run_capture(&mut cmd, root)?;
        generation_tokens_per_s(&out).ok_or_else(|| format_err!("llama-bench printed no generation result:\n{out}"))
    }
}

/// `avg_ts` of the last JSONL record of llama-bench's output that generated tokens (`n_gen` > 0).
fn generation_tokens_per_s(stdout: &str) -> Option<f64> {
    stdout.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        (v.get("n_gen")?.as_u64()? > 0).then_some(())?;
        v.get("avg_ts")?.as_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::generation_tokens_per_s;

    #[test]
    fn reads_the_generation_record() {
        let out = "noise\n{\"n_prompt\": 0, \"n_gen\": 64, \"avg_ts\": 48.25, \"stddev_ts\": 0.5}\n";
        assert_eq!(generation_tokens_per_s(out), Some(48.25));
        assert_eq!(generation_tokens_per_s("{\"n_prompt\": 128, \"n_gen\": 0, \"avg_ts\": 900.0}"), None);
        assert_eq!(generation_tokens_per_s("no json"), None);
    }
}
