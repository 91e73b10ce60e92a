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
    let tok = serde_json::json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}, "pre_tokenizer": {"type": "Whitespace"}});
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
];

#[test]
fn every_bad_invocation_fails_with_an_error_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures(root);
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
