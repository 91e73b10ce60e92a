//! The four classes of bad input of docs/reliability.md, on the binary: sizes that cannot fit, options checked
//! before any work, mixed-up inputs, and messages that name the culprit. Each case runs `slimllm` on tiny
//! synthetic fixtures and asserts the exit code and what the message names; the cases that must fail before the
//! weights load use a model whose weight file is garbage, so a late check shows up as a safetensors error instead.

use slim_checkpoint::synthetic::SyntheticSpec;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;

/// Tiny llama models (vocabulary 64, context 256) with a word-level tokenizer of `t0`…`t63`: `model` and
/// `model2` (other weights), `noweights` (a garbage weight file), `bostok` (a tokenizer that adds a token past the
/// vocabulary); PTB-valid of 1,000 tokens and a BoolQ of 4 documents under `data`, and a BoolQ with a
/// 50,000-token document under `long`.
fn fixtures(root: &Path) {
    // `bos` adds a special token whose id (70) is past the vocabulary, as a post-processor of another model would.
    let tokenizer = |bos: bool| {
        let vocab: serde_json::Map<String, serde_json::Value> = (0..64).map(|i| (format!("t{i}"), i.into())).collect();
        let model = serde_json::json!({"type": "WordLevel", "vocab": vocab, "unk_token": "t0"});
        let mut t = serde_json::json!({"version": "1.0", "model": model, "pre_tokenizer": {"type": "Whitespace"}});
        if bos {
            let bos = serde_json::json!({"SpecialToken": {"id": "[BOS]", "type_id": 0}});
            let seq = |id: &str| serde_json::json!({"Sequence": {"id": id, "type_id": 0}});
            t["post_processor"] = serde_json::json!({"type": "TemplateProcessing", "single": [bos, seq("A")],
                "pair": [bos, seq("A"), seq("B")],
                "special_tokens": {"[BOS]": {"id": "[BOS]", "ids": [70], "tokens": ["[BOS]"]}}});
        }
        t.to_string()
    };
    for (name, seed, bos) in [("model", 1, false), ("model2", 2, false), ("noweights", 1, false), ("bostok", 1, true)] {
        let (cfg, w) = SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 24, 64, seed).build();
        let m = root.join(name);
        slim_checkpoint::save_model_dir(&m, &cfg, &w, &m).unwrap();
        std::fs::write(m.join("tokenizer.json"), tokenizer(bos)).unwrap();
    }
    std::fs::write(root.join("noweights/model.safetensors"), b"this is not a safetensors file").unwrap();
    std::fs::write(root.join("bad.gguf"), b"NOTAGGUF").unwrap();
    let ptb = root.join("data/datasets/ptb");
    std::fs::create_dir_all(&ptb).unwrap();
    let line = |i: usize| (0..10).map(|j| format!("t{}", 3 + (i * 7 + j * 5) % 60)).collect::<Vec<_>>().join(" ");
    std::fs::write(ptb.join("valid.txt"), (0..100).map(line).collect::<Vec<_>>().join("\n")).unwrap();
    let doc = |id: usize, query: &str| {
        serde_json::json!({"doc_id": id, "doc": {"choices": ["t1", "t2"], "gold": id % 2, "query": query}}).to_string()
    };
    let zs = root.join("data/datasets/zeroshot");
    std::fs::create_dir_all(&zs).unwrap();
    let docs: Vec<String> = (0..4).map(|i| doc(i, &format!("t{} t{} t9 t10", 3 + i, 20 + i))).collect();
    std::fs::write(zs.join("boolq.jsonl"), docs.join("\n") + "\n").unwrap();
    let long = root.join("long/datasets/zeroshot");
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join("boolq.jsonl"), doc(0, &"t5 ".repeat(50_000)) + "\n").unwrap();
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `slimllm ARGS` with `--data-root ROOT/data`, `{root}` replaced, the memory said to be 1 GiB.
fn slimllm(root: &Path, args: &str) -> Run {
    let argv: Vec<String> = args.split_whitespace().map(|a| a.replace("{root}", &root.display().to_string())).collect();
    let out: Output = Command::new(env!("CARGO_BIN_EXE_slimllm"))
        .args(&argv)
        .arg("--data-root")
        .arg(root.join("data"))
        .env("SLIMLLM_MEM_AVAILABLE", "1G")
        .env_remove("SLIMLLM_CACHE")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into());
    Run { code: out.status.code(), stdout, stderr }
}

/// Runs each `(arguments, exit code, fragments)` and collects the ones whose exit code differs, that panic, or
/// whose stderr lacks a fragment.
fn check(root: &Path, cases: &[(&str, i32, &[&str])]) {
    let mut failures = Vec::new();
    for (args, code, want) in cases {
        let r = slimllm(root, args);
        let ok = r.code == Some(*code) && !r.stderr.contains("panicked") && want.iter().all(|w| r.stderr.contains(w));
        if !ok {
            failures.push(format!("`slimllm {args}`: exit {:?}, want {code} and {want:?}:\n{}", r.code, r.stderr));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    fixtures(&root);
    (tmp, root)
}

/// An 8-layer llama (hidden 384, intermediate 1,536; 71 MB in f32) in `ROOT/big` with the fixtures' tokenizer:
/// its whole-model memory estimate exceeds 200 MiB, what the streaming tests tell the binary it has.
fn big_model(root: &Path) -> (slim_checkpoint::ModelConfig, slim_checkpoint::Weights, PathBuf) {
    let (cfg, w) = SyntheticSpec::dense("llama", 8, 384, 6, 3, 64, 1536, 64, 4).build();
    let big = root.join("big");
    slim_checkpoint::save_model_dir(&big, &cfg, &w, &big).unwrap();
    std::fs::copy(root.join("model/tokenizer.json"), big.join("tokenizer.json")).unwrap();
    (cfg, w, big)
}

/// Sizes past the memory (1 GiB here) fail before the weights load (the weight file is garbage), naming the
/// options, the bytes and where the memory figure comes from; past RoPE's exact positions is an error too.
#[test]
fn sizes_that_cannot_fit_fail_before_the_model_loads() {
    let (_tmp, root) = setup();
    let fit = ["would need about", "bytes, estimated), but 1.0 GiB is available (SLIMLLM_MEM_AVAILABLE=1G)"];
    let with = |x: &'static str| -> Vec<&'static str> { [x].into_iter().chain(fit).collect() };
    let cases: Vec<(&str, i32, Vec<&str>)> = vec![
        ("eval ppl --model {root}/noweights --data ptb-valid --seq-len 20000", 1, with("--seq-len 20000")),
        (
            "bench --model {root}/noweights --batch 4096 --seq-len 2048 --no-decode",
            1,
            with("--batch 4096 × --seq-len 2048"),
        ),
        ("bench --model {root}/noweights --decode-prompt 100000", 1, with("--decode-prompt 100000 + --decode 64")),
        (
            "generate --model {root}/noweights --prompt t1 --max-new 10000000",
            1,
            with("--max-new 10000000 after a prompt of 1 tokens"),
        ),
        ("generate --model {root}/noweights --prompt t1 --max-new 100000000", 1, vec!["--max-new 100000000", "RoPE"]),
    ];
    let cases: Vec<(&str, i32, &[&str])> = cases.iter().map(|(a, c, w)| (*a, *c, &w[..])).collect();
    check(&root, &cases);
    // A document of 50,000 tokens makes a batch of its own whose attention scores do not fit.
    let r = slimllm(&root, &format!("eval zeroshot --model {}/noweights --tasks boolq", root.display()));
    let r2 = Command::new(env!("CARGO_BIN_EXE_slimllm"))
        .args(["eval", "zeroshot", "--tasks", "boolq", "--model"])
        .arg(root.join("noweights"))
        .arg("--data-root")
        .arg(root.join("long"))
        .env("SLIMLLM_MEM_AVAILABLE", "1G")
        .output()
        .unwrap();
    assert_eq!(r.code, Some(1), "the short documents reach the (garbage) weights: {}", r.stderr);
    assert!(r.stderr.contains("model.safetensors"), "{}", r.stderr);
    let e = String::from_utf8_lossy(&r2.stderr);
    assert_eq!(r2.status.code(), Some(1), "{e}");
    assert!(e.contains("scoring boolq (its longest document, 0, runs 50002 tokens) would need about"), "{e}");
    assert!(e.contains("past the model's context of 256"), "a warning first: {e}");
    // The same sizes within the memory run; a window past the context warns and still runs.
    let r = slimllm(&root, "eval ppl --model {root}/model --data ptb-valid --seq-len 300 --windows 2");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("--seq-len 300 reaches position 300, past the model's context of 256"), "{}", r.stderr);
}

/// Every option is checked before the weights load: bad values are usage errors naming the option (negative ones
/// included), and checks that need the text or the documents come before the load too.
#[test]
fn options_are_checked_before_any_work() {
    let (_tmp, root) = setup();
    check(
        &root,
        &[
            ("eval ppl --model {root}/noweights --data ptb-valid --windows 0", 2, &["--windows", "at least 1, got 0"]),
            ("eval ppl --model {root}/noweights --data ptb-valid --seq-len 1", 2, &["--seq-len", "at least 2, got 1"]),
            ("eval ppl --model {root}/noweights --data ptb-valid --batch -3", 2, &["--batch", "negative"]),
            (
                "eval ppl --model {root}/noweights --data ptb-valid --seq-len 5000",
                1,
                &["ptb-valid has 1000 tokens: fewer than one window of --seq-len 5000"],
            ),
            ("eval zeroshot --model {root}/noweights --tasks boolq --limit -1", 2, &["--limit", "negative"]),
            ("bench --model {root}/noweights --repeats -1", 2, &["--repeats", "negative"]),
            ("bench --model {root}/noweights --decode-prompt 0", 2, &["--decode-prompt", "at least 1"]),
            ("bench --model {root}/noweights --seq-len 8,-2", 2, &["--seq-len", "negative"]),
            ("bench --model {root}/noweights --out {root}/bad.gguf/x.json", 1, &["--out", "bad.gguf"]),
            ("generate --model {root}/noweights --prompt t1 --max-new 0", 2, &["--max-new", "at least 1"]),
            ("generate --model {root}/noweights --prompt t1 --seed -1", 2, &["--seed"]),
            ("generate --model {root}/noweights --prompt t1 --top-p nan", 1, &["--top-p"]),
        ],
    );
}

/// `--resume` merges only the samples of the same model, `--limit` and tasks, each document once.
#[test]
fn resume_refuses_samples_of_another_run_and_repeated_documents() {
    let (_tmp, root) = setup();
    let s = root.join("s.jsonl");
    let zs = |model: &str, extra: &str| {
        slimllm(
            &root,
            &format!("eval zeroshot --model {{root}}/{model} --tasks boolq --samples {} {extra}", s.display()),
        )
    };
    let first = zs("model", "");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let text = std::fs::read_to_string(&s).unwrap();
    assert_eq!(text.lines().count(), 4);
    // Resuming the same run scores nothing new and gives the same results.
    let again = zs("model", "--resume");
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let results = |r: &Run| {
        serde_json::from_str::<serde_json::Value>(r.stdout.lines().last().unwrap()).unwrap()["results"].clone()
    };
    assert_eq!(results(&again), results(&first));
    assert!(again.stderr.contains("4 documents already scored, 0 to go"), "{}", again.stderr);
    let cases = [
        ("model2", "--resume", "s.jsonl line 1: --resume would merge scores that this run did not make"),
        ("model2", "--resume", "another model, or changed weights"),
        ("model", "--resume --limit 2", "written by a run with no --limit, this run has --limit 2"),
    ];
    for (model, extra, want) in cases {
        let r = zs(model, extra);
        assert!(r.code == Some(1) && r.stderr.contains(want), "{model} {extra}: {}", r.stderr);
        assert_eq!(std::fs::read_to_string(&s).unwrap(), text, "a refused samples file is left as it was");
    }
    // The same document twice: the second line would silently win.
    let dup = format!("{text}{}\n", text.lines().nth(1).unwrap());
    std::fs::write(&s, dup).unwrap();
    let r = zs("model", "--resume");
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("s.jsonl line 5: boolq document 1 again (first on line 2)"), "{}", r.stderr);
    // Without --resume the file is started afresh.
    assert_eq!(zs("model2", "").code, Some(0));
    // Two documents of the data with one doc_id.
    let boolq = root.join("data/datasets/zeroshot/boolq.jsonl");
    let data = std::fs::read_to_string(&boolq).unwrap();
    std::fs::write(&boolq, format!("{data}{}\n", data.lines().next().unwrap())).unwrap();
    let r = zs("model", "");
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("boolq.jsonl:5: boolq document id 0 again (first on line 1)"), "{}", r.stderr);
}

/// Token ids past the model's vocabulary name the tokenizer, the input and the id; `--windows 0` names itself.
#[test]
fn messages_name_the_culprit() {
    let (_tmp, root) = setup();
    std::fs::write(root.join("words.txt"), "t1 t2 t3").unwrap();
    check(
        &root,
        &[
            (
                "eval ppl --model {root}/bostok --data ptb-valid --seq-len 8",
                1,
                &[
                    "bostok/tokenizer.json tokenizes ptb-valid (",
                    "valid.txt",
                    "token id 70 (token 0 of 1000)",
                    "64 ids",
                ],
            ),
            (
                "tokenize --model {root}/bostok --text-file {root}/words.txt",
                1,
                &["words.txt", "token id 70 (token 0 of 4)"],
            ),
            ("generate --model {root}/bostok --prompt t7", 1, &["--prompt `t7`", "token id 70 (token 0 of 2)"]),
            ("eval ppl --model {root}/model --data ptb-valid --windows 0", 2, &["--windows", "at least 1"]),
        ],
    );
}

/// `cache verify` reports symbolic links where the store keeps entries (to a folder, or dangling) and inside an
/// entry; `--repair` removes the links and never what they point to.
#[test]
fn cache_verify_reports_and_repairs_symbolic_links() {
    use slim_artifact::{Key, KeyDoc, Store};
    use std::os::unix::fs::symlink;
    let (_tmp, root) = setup();
    let cache = root.join("cache");
    let store = Store::open(&cache).unwrap();
    let commit = |n: u32| {
        let doc = KeyDoc::new("calib", 1, &serde_json::json!({"n": n}), Default::default()).unwrap();
        let mut w = store.begin(&doc).unwrap();
        w.put_bytes("ids.bin", &n.to_le_bytes()).unwrap();
        w.commit().unwrap()
    };
    let (a, b) = (commit(1), commit(2));
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::rename(cache.join("calib").join(b.to_hex()), elsewhere.join("entry")).unwrap();
    symlink(elsewhere.join("entry"), cache.join("calib").join(b.to_hex())).unwrap();
    let dangling = Key::parse("0123456789abcdef0123456789abcdef").unwrap();
    symlink(root.join("gone"), cache.join("calib").join(dangling.to_hex())).unwrap();
    let payload = cache.join("calib").join(a.to_hex()).join("ids.bin");
    std::fs::copy(&payload, elsewhere.join("ids.bin")).unwrap();
    std::fs::remove_file(&payload).unwrap();
    symlink(elsewhere.join("ids.bin"), &payload).unwrap();
    let verify = format!("cache verify --cache {}", cache.display());
    let r = slimllm(&root, &verify);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    for (key, what) in [(b, "a symbolic link where the store keeps entry folders"), (dangling, "a symbolic link where")]
    {
        assert!(r.stdout.contains(&format!("calib/{key}")) && r.stdout.contains(what), "{}", r.stdout);
    }
    assert!(r.stdout.contains("ids.bin: a symbolic link or special file inside the entry"), "{}", r.stdout);
    assert!(r.stdout.contains("3 entries checked, 3 problems"), "{}", r.stdout);
    let r = slimllm(&root, &format!("{verify} --repair"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("3 entries checked, 3 broken and removed"), "{}", r.stdout);
    let left: Vec<_> = std::fs::read_dir(cache.join("calib")).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(elsewhere.join("entry/manifest.json").is_file() && elsewhere.join("ids.bin").is_file(), "targets kept");
    let r = slimllm(&root, &verify);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// `eval ppl` holds one decoder layer at a time: a model of 71 MB in f32, which loaded whole (weights, the load's
/// transient copies and the process, about 205 MiB estimated) exceeds the memory said to be available (200 MiB),
/// is evaluated, and gives the whole model's perplexity to the bit.
#[test]
fn eval_ppl_streams_a_model_larger_than_the_memory() {
    let (_tmp, root) = setup();
    let (cfg, w, big) = big_model(&root);
    let out = Command::new(env!("CARGO_BIN_EXE_slimllm"))
        .args(["--quiet", "eval", "ppl", "--data", "ptb-valid", "--seq-len", "32", "--windows", "6", "--batch", "4"])
        .arg("--model")
        .arg(&big)
        .arg("--data-root")
        .arg(root.join("data"))
        .env("SLIMLLM_MEM_AVAILABLE", "200M")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same windows through the whole model in this process.
    let text = slim_data::EvalText::from_str("ptb-valid").unwrap().load(&root.join("data")).unwrap();
    let ids = slim_model::Tokenizer::load(&big).unwrap().encode(&text).unwrap();
    let model = slim_model::Llama::<slim_model::Cpu>::from_weights(cfg, &w, &Default::default()).unwrap();
    let pc = slim_eval::PplConfig { seq_len: 32, batch: 4, max_windows: Some(6), progress: false };
    let whole = slim_eval::perplexity(&model, &ids, &pc).unwrap();
    assert_eq!(v["windows"], 6);
    assert_eq!(v["ppl"].as_f64().unwrap().to_bits(), whole.ppl.to_bits(), "{v} vs {}", whole.ppl);
}

/// `eval ppl --weights bf16` holds the whole model with its projections in bf16: the model of the test above fits
/// the same 200 MiB that way (and is refused with `--weights f32`, naming the options); its perplexity is the one of
/// `Llama::load_in(.., Bf16)` in this process to the bit and within the weights' rounding of the f32 one.
#[test]
fn eval_ppl_holds_the_whole_model_in_half_precision() {
    let (_tmp, root) = setup();
    let (cfg, w, big) = big_model(&root);
    let run = |weights: &str| {
        Command::new(env!("CARGO_BIN_EXE_slimllm"))
            .args([
                "--quiet",
                "eval",
                "ppl",
                "--data",
                "ptb-valid",
                "--seq-len",
                "32",
                "--windows",
                "6",
                "--batch",
                "4",
            ])
            .args(["--weights", weights, "--model"])
            .arg(&big)
            .arg("--data-root")
            .arg(root.join("data"))
            .env("SLIMLLM_MEM_AVAILABLE", "200M")
            .output()
            .unwrap()
    };
    let refused = run("f32");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--seq-len 32 with --weights f32") && stderr.contains("SLIMLLM_MEM_AVAILABLE"), "{stderr}");
    let out = run("bf16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["weights"], "bf16");
    let text = slim_data::EvalText::from_str("ptb-valid").unwrap().load(&root.join("data")).unwrap();
    let ids = slim_model::Tokenizer::load(&big).unwrap().encode(&text).unwrap();
    let pc = slim_eval::PplConfig { seq_len: 32, batch: 4, max_windows: Some(6), progress: false };
    let dev = Default::default();
    let half = slim_model::Llama::<slim_model::Cpu>::load_in(&big, &dev, slim_checkpoint::WeightDtype::Bf16).unwrap();
    let want = slim_eval::perplexity(&half, &ids, &pc).unwrap().ppl;
    assert_eq!(v["ppl"].as_f64().unwrap().to_bits(), want.to_bits(), "{v} vs {want}");
    let f32_model = slim_model::Llama::<slim_model::Cpu>::from_weights(cfg, &w, &dev).unwrap();
    let full = slim_eval::perplexity(&f32_model, &ids, &pc).unwrap().ppl;
    assert!((want / full - 1.0).abs() < 1e-2, "bf16 {want} against f32 {full}");
    assert_ne!(want.to_bits(), full.to_bits(), "the weights were not rounded to bf16");
}

/// `eval zeroshot` reads one decoder layer at a time: a model whose whole-model estimate exceeds the memory it is
/// told it has is scored, and every request's log-likelihood equals the whole model's in this process to the bit.
#[test]
fn eval_zeroshot_streams_a_model_larger_than_the_memory() {
    let (_tmp, root) = setup();
    let (cfg, w, big) = big_model(&root);
    let samples = root.join("s.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_slimllm"))
        .args(["--quiet", "eval", "zeroshot", "--tasks", "boolq", "--model"])
        .arg(&big)
        .arg("--samples")
        .arg(&samples)
        .arg("--data-root")
        .arg(root.join("data"))
        .env("SLIMLLM_MEM_AVAILABLE", "200M")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let docs = slim_data::zeroshot::Task::Boolq.load(&root.join("data"), None).unwrap();
    let tok = slim_model::Tokenizer::load(&big).unwrap();
    let eot = cfg.eos_token_id.or(cfg.bos_token_id).unwrap_or(0);
    let toks: Vec<_> = docs.iter().map(|d| slim_eval::zeroshot::tokenize_doc(&tok, d, eot).unwrap()).collect();
    let model = slim_model::Llama::<slim_model::Cpu>::from_weights(cfg, &w, &Default::default()).unwrap();
    let mut progress = slim_eval::zeroshot::Progress::new(0, false);
    let whole = slim_eval::zeroshot::score_tasks(&model, &[("boolq", &toks[..])], &mut progress).unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (line, want) in lines.iter().zip(&whole[0]) {
        let got: Vec<f64> = line["lls"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let want: Vec<f64> = want.iter().map(|l| l.ll).collect();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

/// `pipeline run` reads one decoder layer at a time, and its memory check counts one layer, its statistics and the
/// calibration activations, not the whole model: a model whose whole-model estimate exceeds the memory it is told
/// it has is pruned (the check used to count the whole model and refused it).
#[test]
fn pipeline_run_prunes_a_model_larger_than_the_memory() {
    let (_tmp, root) = setup();
    let (cfg, _, big) = big_model(&root);
    let out = Command::new(env!("CARGO_BIN_EXE_slimllm"))
        .args(["--quiet", "pipeline", "run", "--calib-source", "random", "--calib-windows", "8", "--calib-len", "32"])
        .args(["--no-eval", "--gguf", "none", "--run", "big-20", "--model"])
        .arg(&big)
        .arg("--cache")
        .arg(root.join("cache"))
        .arg("--data-root")
        .arg(root.join("data"))
        .env("SLIMLLM_MEM_AVAILABLE", "200M")
        .current_dir(&root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let pruned = slim_checkpoint::ModelConfig::load(&root.join("data/runs/big-20/model")).unwrap();
    let (before, after) = (cfg.num_params() as f64, pruned.num_params() as f64);
    assert!((1.0 - after / before - 0.2).abs() < 0.02, "{before} -> {after} parameters");
}
