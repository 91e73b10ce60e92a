//! Writes a tiny seeded synthetic model directory (GQA, 6 layers, odd sizes; the one the
//! process tests prune) so that the pipeline can be tried, or artifacts made, in seconds:
//!
//! `cargo run --release -p slim-cli --example synthetic_model -- DIR`
//! then `slimllm pipeline run --model DIR --calib-source random --calib-windows 16 --calib-len 64 --no-eval …`.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os().nth(1).ok_or_else(|| anyhow::format_err!("usage: synthetic_model DIR"))?;
    let dir = std::path::PathBuf::from(dir);
    let (cfg, w) = slim_checkpoint::synthetic::SyntheticSpec::dense("llama", 6, 96, 8, 4, 12, 256, 301, 3).build();
    slim_checkpoint::save_model_dir(&dir, &cfg, &w, &dir)?;
    // A placeholder: random calibration never tokenizes, but the model directory is hashed.
    std::fs::write(dir.join("tokenizer.json"), "{}")?;
    println!("{}", dir.display());
    Ok(())
}
