//! Bad invocations of `slimllm`: each must fail (non-zero exit, no panic) with an error that
//! names what is wrong. The same table is in docs/reliability.md; this test keeps it true.
//! Every case fails before any real model work, on a tiny synthetic model in a temp folder.

use slim_checkpoint::synthetic::SyntheticSpec;
use std::path::Path;
use std::process::Command;

/// A tiny model directory with a real (if small) tokenizer, a GGUF-looking file with a bad
/// magic, a model whose config names an unknown architecture, and one with a broken config.
fn fixtures(root: &Path) {
    let (cfg, w) = SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 24, 64, 1).build();
    let m = root.join("model");
    slim_checkpoint::save_model_dir(&m, &cfg, &w, &m).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..64u32).map(|i| (format!("t{i}"), i.into())).collect();
    let tok = serde_json::json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"},
        "pre_tokenizer": {"type": "Whitespace"}});
    std::fs::write(m.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(root.join("bad.gguf"), b"NOTAGGUF\x03\x00\x00\x00").unwrap();
    let arch = root.join("gpt2");
    slim_checkpoint::save_model_dir(&arch, &cfg, &w, &arch).unwrap();
    let text = std::fs::read_to_string(arch.join("config.json")).unwrap().replace("\"llama\"", "\"gpt2\"");
    std::fs::write(arch.join("config.json"), text).unwrap();
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"hidden_size\": 16,").unwrap();
    std::fs::create_dir_all(root.join("data/datasets")).unwrap();
    write_and_load_fixtures(root);
}

/// Fixtures of docs/reliability.md's "Writes and imports": a model folder to import over
/// (`imported`), a weights file cut short (`truncated`), a NaN weight (`nan`), a weights file that
/// is a symbolic link to itself (`looped`) and a tokenizer with more ids than the embedding
/// (`bigvocab`, 70 tokens for a vocab_size of 64).
fn write_and_load_fixtures(root: &Path) {
    let m = root.join("model");
    let copy = |name: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(m.join(f), d.join(f)).unwrap();
        }
        d
    };
    copy("imported");
    let st = copy("truncated").join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 16]).unwrap();
    let (cfg, mut w) = SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 24, 64, 1).build();
    let mut up = w.get("model.layers.0.mlp.up_proj.weight").unwrap().clone();
    up.data[3] = f32::NAN;
    w.insert("model.layers.0.mlp.up_proj.weight", up);
    slim_checkpoint::save_model_dir(&root.join("nan"), &cfg, &w, &m).unwrap();
    let st = copy("looped").join("model.safetensors");
    std::fs::remove_file(&st).unwrap();
    std::os::unix::fs::symlink(&st, &st).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..70u32).map(|i| (format!("t{i}"), i.into())).collect();
    let tok = serde_json::json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}});
    std::fs::write(copy("bigvocab").join("tokenizer.json"), tok.to_string()).unwrap();
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// `(arguments, fragments the error must contain)`; `{root}` is the fixtures folder.
const CASES: &[(&str, &[&str])] = &[
    ("eval ppl --model {root}/missing --data ptb-valid", &["missing", "config.json"]),
    ("eval ppl --model {root}/model --data wikitext", &["invalid value 'wikitext'", "--data"]),
    ("eval ppl --model {root}/model --data ptb-valid", &["ptb", "cargo xtask fetch ptb"]),
    ("eval ppl --model {root}/broken --data ptb-valid", &["broken", "config.json"]),
    ("eval ppl --model {root}/gpt2 --data ptb-valid", &["gpt2", "unsupported model_type"]),
    ("import --gguf {root}/nothere.gguf --out {root}/x", &["nothere.gguf"]),
    ("import --gguf {root}/bad.gguf --out {root}/x", &["bad.gguf", "magic"]),
    ("import --gguf {root}/bad.gguf --out {root}/imported", &["--out", "imported", "not empty", "--force"]),
    ("import --gguf {root}/bad.gguf --out {root}/imported --force", &["bad.gguf", "magic"]),
    ("bench --model {root}/truncated --repeats 1", &["truncated/model.safetensors", "truncated", "file has"]),
    ("bench --model {root}/nan --repeats 1", &["nan/model.safetensors", "model.layers.0.mlp.up_proj.weight", "NaN"]),
    ("bench --model {root}/looped --repeats 1", &["looped/model.safetensors", "symbolic link loop"]),
    (
        "tokenize --model {root}/bigvocab --text-file {root}/bad.gguf",
        &["bigvocab/tokenizer.json", "bigvocab/config.json", "vocab_size 64"],
    ),
    ("pipeline run --model {root}/model --target 1.5 --no-eval", &["--target", "(0, 1)", "1.5"]),
    ("pipeline run --model {root}/model --target 0 --no-eval", &["--target", "(0, 1)"]),
    ("pipeline run --model {root}/model --scorer best", &["invalid value 'best'", "--scorer"]),
    ("pipeline run --model {root}/model --recovery magic", &["invalid value 'magic'", "--recovery"]),
    ("pipeline run --model {root}/model --gqa some", &["invalid value 'some'", "--gqa"]),
    ("pipeline run --model {root}/model --keep-lowest 0.7 --no-eval", &["--keep-lowest", "0.7"]),
    ("pipeline run --model {root}/model --lstsq-ridge -1 --no-eval", &["--lstsq-ridge", "-1"]),
    ("pipeline run --model {root}/model --allocation uniform --alpha 5 --no-eval", &["--alpha", "uniform"]),
    (
        "pipeline run --model {root}/model --allocation flap-global --pruned-layers 3 --no-eval",
        &["--pruned-layers", "flap-global"],
    ),
    ("pipeline run --model {root}/model --preset fastest --no-eval", &["--preset", "fastest"]),
    ("pipeline run --model {root}/model --calib-source wiki --no-eval", &["wiki", "calib"]),
    (
        "pipeline run --model {root}/model --pruned-layers 0 --calib-source random --no-eval --cache {root}/cache",
        &["--pruned-layers", "1..=2"],
    ),
    (
        "pipeline run --model {root}/model --calib-windows 0 --calib-source random --no-eval --cache {root}/cache",
        &["--calib-windows", "at least 1"],
    ),
    (
        "pipeline run --model {root}/model --calib-len 1 --calib-source random --no-eval --cache {root}/cache",
        &["--calib-len"],
    ),
    ("pipeline run --model {root}/missing --no-eval --cache {root}/cache", &["missing"]),
    ("pipeline explain --model {root}/model --target 2", &["--target"]),
    ("pipeline run --model {root}/model --alpha -5 --no-eval", &["--alpha", "-5", "reverses"]),
    ("pipeline run --model {root}/model --eval-windows 0", &["--eval-windows", "at least 1"]),
    ("pipeline run --model {root}/model --align 0 --no-eval", &["--align", "at least 1"]),
    (
        "pipeline run --model {root}/model --align 4096 --calib-source random --no-eval --cache {root}/cache",
        &["--align 4096", "leaves no layer anything to prune"],
    ),
    ("pipeline run --model {root}/model --run ../escape --no-eval", &["--run", "not a path"]),
    (
        "pipeline run --model {root}/model --calib-windows 100000000 --calib-source random --no-eval \
         --cache {root}/cache",
        &["--calib-windows 100000000", "would need", "available"],
    ),
    ("cache gc --cache {root}/cache", &["cache gc", "--runs DIR", "--all"]),
    ("stage polish --model {root}/model", &["invalid value 'polish'"]),
    ("generate --model {root}/model --prompt t1 --temperature -1", &["--temperature", "-1"]),
    ("generate --model {root}/model --prompt t1 --top-p 0", &["--top-p", "(0, 1]"]),
    ("generate --model {root}/model --prompt '' ", &["prompt", "nothing"]),
    ("generate --model {root}/model --prompt hi --chat", &["chat_template"]),
    ("bench --model {root}/model --repeats 0", &["--repeats"]),
    ("bench --model {root}/model --batch 0", &["--batch"]),
    ("--backend cuda bench --model {root}/model", &["cuda", "--features cuda"]),
    ("tokenize --model {root}/broken --text-file {root}/bad.gguf", &["broken", "tokenizer.json"]),
    ("eval ppl --model {root}/model --data ptb-valid --out {root}/bad.gguf/x.json", &["--out", "bad.gguf"]),
    ("cache verify --cache {root}/model/config.json", &["config.json"]),
    ("eval zeroshot --model {root}/model --tasks arc", &["unknown task `arc`", "arc_easy"]),
    ("eval zeroshot --model {root}/model --tasks boolq --limit 0", &["--limit", "at least 1"]),
    ("eval zeroshot --model {root}/model --tasks boolq", &["boolq.jsonl", "cargo xtask fetch zeroshot"]),
    ("eval zeroshot --model {root}/model --resume", &["required", "--samples", "--resume"]),
    ("eval ppl --model {root}/model --data ptb-valid --windows 0", &["--windows", "at least 1"]),
    ("eval ppl --model {root}/model --data ptb-valid --seq-len -5", &["--seq-len", "negative"]),
    ("eval zeroshot --model {root}/model --tasks boolq --limit -1", &["--limit", "negative"]),
    ("generate --model {root}/model --prompt t1 --max-new 0", &["--max-new", "at least 1"]),
    ("generate --model {root}/model --prompt t1 --max-new 100000000", &["--max-new 100000000", "RoPE"]),
    (
        "bench --model {root}/model --batch 100000 --seq-len 100000 --no-decode",
        &["--batch 100000 × --seq-len 100000", "would need about", "available"],
    ),
    ("bench --model {root}/model --decode-prompt -1", &["--decode-prompt", "negative"]),
    ("synth-model --shape gpt-5 --out {root}/s", &["invalid value 'gpt-5'", "--shape", "smollm2-135m"]),
    ("synth-model --shape smollm2-135m --layers 0 --out {root}/s", &["--layers", "at least 1"]),
    ("synth-model --shape smollm2-135m --dtype f64 --out {root}/s", &["invalid value 'f64'", "--dtype"]),
    ("synth-model --shape smollm2-135m --out {root}/imported", &["--out", "imported", "not empty", "--force"]),
    ("synth-model --shape smollm2-135m --out {root}/bad.gguf/m", &["--out", "bad.gguf/m", "Not a directory"]),
    (
        "synth-model --shape smollm2-135m --tokenizer-from {root}/missing --out {root}/s",
        &["--tokenizer-from", "missing/tokenizer.json"],
    ),
];

#[test]
fn every_bad_invocation_fails_with_an_error_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures(root);
    let imported = files(&root.join("imported"));
    let mut failures = Vec::new();
    let mut table =
        String::from("| invocation | exit | error (first line; the fixture folder shown as ROOT) |\n|---|---|---|\n");
    for (args, want) in CASES {
        let line = args.replace("{root}", &root.display().to_string());
        let argv: Vec<String> = shell_words(&line);
        let out = Command::new(env!("CARGO_BIN_EXE_slimllm"))
            .args(&argv)
            .arg("--data-root")
            .arg(root.join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let ok = !out.status.success()
            && out.status.code().is_some()
            && !err.contains("panicked")
            && want.iter().all(|w| err.contains(w));
        if !ok {
            failures.push(format!("`slimllm {args}` (exit {:?}):\n{err}", out.status.code()));
        }
        let first =
            err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").replace(&root.display().to_string(), "ROOT");
        let causes: Vec<&str> = err.lines().filter_map(|l| l.trim().strip_prefix("caused by: ")).collect();
        let msg = if causes.is_empty() { first } else { format!("{first}: {}", causes.join(": ")) };
        table += &format!(
            "| `slimllm {}` | {} | {} |\n",
            args.replace("{root}", "ROOT"),
            out.status.code().unwrap_or(-1),
            msg.replace('|', "\\|")
        );
    }
    // The refused and the failed import left --out byte for byte as it was, and no temporary folder.
    assert!(files(&root.join("imported")) == imported, "a failed `slimllm import --force` changed its --out");
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".imported") || n.starts_with(".x."))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left beside --out: {leftovers:?}");
    // `SLIMLLM_PRINT_TABLE=1 cargo test -p slim-cli --test bad_input -- --nocapture` prints
    // the table of docs/reliability.md.
    if std::env::var_os("SLIMLLM_PRINT_TABLE").is_some() {
        println!("{table}");
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

/// Splits on spaces, keeping '…' quoted words (empty ones included) together.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut had) = (false, false);
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                had = true;
            }
            ' ' if !quoted => {
                if had || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                had = false;
            }
            c => cur.push(c),
        }
    }
    if had || !cur.is_empty() {
        out.push(cur);
    }
    out
}
