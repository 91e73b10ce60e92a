use super::*;

/// Summaries of real runs on the fixtures' tiny model: one per allocation, written where
/// `pipeline run` writes them (`<root>/runs/<run>/summary.json`).
fn real_runs(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    use slim_artifact::Kind;
    use slim_pipeline::{fixtures, AllocationKind, EvalInput, ModelSource, PipelineConfig, RunName, RunRequest};
    fixtures::worded_model(&root.join("m"));
    fixtures::write_texts(root, 1);
    let store = slim_artifact::Store::open(&root.join("cache")).unwrap();
    let model = ModelSource::open(&root.join("m")).unwrap();
    let evals = [EvalInput::load(slim_data::EvalText::PtbValid, root).unwrap()];
    let mut dirs = Vec::new();
    for allocation in [AllocationKind::Cosine, AllocationKind::Uniform, AllocationKind::FlapGlobal] {
        let mut cfg = PipelineConfig::paper(0.25, slim_artifact::schema::GqaMode::WholeGroup);
        cfg.calib = slim_capture::CalibConfig {
            source: slim_capture::CalibSource::PtbTrain,
            n_windows: 4,
            seq_len: 16,
            seed: 7,
        };
        cfg.allocation = allocation;
        cfg.pruned_layers = (allocation == AllocationKind::Cosine).then_some(3);
        let run = slim_pipeline::RunsRoot::under(root).run(&RunName::new(allocation.name()).unwrap());
        run.prepare().unwrap();
        let req = RunRequest {
            model: &model,
            cfg: &cfg,
            evals: &evals,
            eval_windows: None,
            run: &run,
            backend: "cpu",
            data_root: root,
            tune: None,
        };
        slim_pipeline::run_and_evaluate::<slim_model::Cpu>(&req, &store, &Default::default(), &Default::default())
            .unwrap();
        dirs.push(run.path().to_path_buf());
    }
    dirs
}

#[test]
fn the_report_tabulates_real_runs_of_every_allocation_and_draws_the_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = real_runs(tmp.path());
    let bench = tmp.path().join("bench.json");
    let row = serde_json::json!({"model": "m", "kind": "decode", "batch": 1, "seq_len": 128, "tokens_per_s": 21.5,
        "min_s": 1.0, "max_s": 1.2, "repeats": 5});
    std::fs::write(&bench, serde_json::json!({ "results": [row] }).to_string()).unwrap();
    let out = tmp.path().join("report");
    let mut inputs = runs.clone();
    inputs.push(bench);
    let path = write_report(&read_inputs(&inputs).unwrap(), &out).unwrap();
    let md = std::fs::read_to_string(path).unwrap();
    let summaries: Vec<slim_pipeline::RunSummary> =
        runs.iter().map(|r| slim_pipeline::RunSummary::read(&r.join("summary.json")).unwrap()).collect();
    for s in &summaries {
        let p = &s.ppl["ptb-valid"];
        let row = format!(
            "| {} | slimllm | affine | whole-group | sequential | {} → {} | {:.3} % \
             | ptb-valid: {:.2} → {:.2} (5 windows) |",
            s.run,
            s.params_before,
            s.params_after,
            100.0 * s.removed_fraction,
            p.before.ppl,
            p.after.ppl
        );
        assert!(md.contains(&row), "no row {row} in {md}");
        let l = s.layers.iter().find(|l| l.kept_heads.is_some()).expect("a pruned layer");
        let line = format!(
            "| {} | {:.4} | {:.3} | {} | {} | {} |",
            l.layer, s.layer_importance[l.layer], l.ratio, l.heads, l.kv_heads, l.channels
        );
        assert!(md.contains(&line), "no line {line} in {md}");
    }
    // Each per-layer heading states its own allocation's figures: no NaN, no null.
    assert!(md.contains("cosine allocation: r0 = 0."), "{md}");
    assert!(md.contains("3 layers pruned, α = 10"), "{md}");
    assert!(md.contains("uniform allocation: ratio 0."), "{md}");
    assert!(md.contains("flap-global allocation: z threshold "), "{md}");
    assert!(!md.contains("NaN") && !md.contains("null"), "{md}");
    assert!(md.contains("| m | decode | 1 × 128 | 21.5 |"), "{md}");
    for chart in ["ppl_vs_params.svg", "layers-cosine.svg", "layers-uniform.svg", "layers-flap-global.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{chart}");
        assert!(md.contains(chart), "{chart} not linked");
    }
    // Four points: the dense model once, then each run.
    assert_eq!(charts::ppl_points(&read_inputs(&runs).unwrap().runs).len(), 4);
    assert!(read_inputs(&[out.join("report.md")]).is_err(), "a Markdown file is not an input");
}

#[test]
fn the_report_shows_zero_shot_results_and_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let task = |acc: f64, norm: Option<f64>| {
        let mut v = serde_json::json!({"n": 10, "acc": acc, "acc_stderr": 0.05});
        if let Some(n) = norm {
            v["acc_norm"] = n.into();
            v["acc_norm_stderr"] = 0.04.into();
        }
        v
    };
    let zs = |model: &str, params: u64, avg: f64| {
        serde_json::json!({
            "results": {
                "boolq": task(0.6, None), "piqa": task(0.7, Some(0.71)), "hellaswag": task(0.4, Some(0.45)),
                "winogrande": task(0.5, None), "arc_easy": task(0.55, Some(0.5)),
                "arc_challenge": task(0.25, Some(0.3)), "openbookqa": task(0.2, Some(0.33)),
                "lambada": {"n": 10, "acc": 0.3, "acc_stderr": 0.1, "ppl": 40.5},
            },
            "average": {"value": avg},
            "n_samples": {"boolq": 10},
            "config": {"model": model, "params": params, "limit": 10},
        })
    };
    let files = [
        ("zs-dense.json", zs("data/models/smollm2-135m", 134_515_008, 0.48)),
        ("zs-20.json", zs("data/runs/p20/model", 107_000_000, 0.44)),
        (
            "gen.json",
            serde_json::json!({
                "model": "data/runs/p20/model", "params": 107_000_000,
                "generations": [{"prompt": "The capital of France is", "completion": " Paris.\n\nThe"}],
                "config": {"chat": false, "max_new": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0},
            }),
        ),
    ];
    let inputs: Vec<_> = files
        .iter()
        .map(|(name, v)| {
            let p = tmp.path().join(name);
            std::fs::write(&p, v.to_string()).unwrap();
            p
        })
        .collect();
    let out = tmp.path().join("report");
    let md = std::fs::read_to_string(write_report(&read_inputs(&inputs).unwrap(), &out).unwrap()).unwrap();
    // The paper's metric per task: acc for BoolQ, acc_norm (starred) for HellaSwag.
    assert!(md.contains("| boolq | piqa | hellaswag* |"), "{md}");
    assert!(
        md.contains(
            "| smollm2-135m | 134.52 M | 60.00 ± 5.00 | 70.00 ± 5.00 | 45.00 ± 4.00 | 50.00 ± 5.00 | 55.00 ± 5.00 \
             | 30.00 ± 4.00 | 33.00 ± 4.00 | **48.00** | 30.00 | 40.50 | first 10 |"
        ),
        "{md}"
    );
    assert!(md.contains("| p20 | 107.00 M |"), "{md}");
    assert!(md.contains("### p20 (107.00 M parameters; greedy, at most 8 new tokens)"), "{md}");
    assert!(md.contains("- **The capital of France is** →  Paris.⏎⏎The"), "{md}");
    let svg = std::fs::read_to_string(out.join("zeroshot_vs_params.svg")).unwrap();
    assert!(svg.starts_with("<svg") && md.contains("zeroshot_vs_params.svg"));
    let points = evals::accuracy_points(&read_inputs(&inputs).unwrap().zeroshot);
    let labels: Vec<&str> = points.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(labels, ["smollm2-135m (first 10)", "p20 (first 10)"]);
    assert_eq!(points.iter().filter(|p| p.3).count(), 1, "one dense point");
    assert!((points[1].1 - 107.0).abs() < 1e-9 && (points[1].2 - 44.0).abs() < 1e-9);
}

#[test]
fn a_variant_grid_becomes_one_table_per_target_best_perplexity_first() {
    let tmp = tempfile::tempdir().unwrap();
    let row = |label: &str, t: f64, ppl: f64| {
        serde_json::json!({"target": t, "label": label, "scorer": "flap", "allocation": "cosine", "recovery": "affine",
        "mode": "dense", "removed_fraction": t, "ppl": {"ptb-valid": ppl, "ptb-test": ppl + 1.0},
        "zeroshot_average": 0.41})
    };
    let broken = serde_json::json!({"target": 0.5, "label": "broken", "scorer": "x", "allocation": "y", "recovery": "z",
        "mode": "dense", "error": "target unreachable\nmore"});
    let grid = serde_json::json!({"kind": "slimllm-grid", "command": "grid", "calib_mode": "dense",
        "eval": ["ptb-valid", "ptb-test"], "zeroshot_limit": 50,
        "dense": {"params": 1000, "ppl": {"ptb-valid": 10.0, "ptb-test": 11.0}},
        "rows": [row("worse", 0.2, 30.0), row("better", 0.2, 20.0), row("half", 0.5, 90.0),
                 broken]});
    let file = tmp.path().join("grid.json");
    std::fs::write(&file, grid.to_string()).unwrap();
    let md =
        std::fs::read_to_string(write_report(&read_inputs(&[file]).unwrap(), &tmp.path().join("r")).unwrap()).unwrap();
    let line = "Perplexity on all windows of each text. Dense model: 1000 parameters, perplexity ptb-valid 10.00, \
                ptb-test 11.00.";
    assert!(md.contains(line), "{md}");
    let (b, w) = (
        md.find("| better | flap | cosine | affine | dense | 20.00 | 20.00 | 21.00 | 41.00 |").expect("better row"),
        md.find("| worse |").unwrap(),
    );
    assert!(b < w, "sorted by PTB-valid perplexity: {md}");
    assert!(
        md.contains("### 50 % of the parameters removed")
            && md.contains("| broken | x | y | z | dense | failed: target unreachable |"),
        "{md}"
    );
}

#[test]
fn per_task_zeroshot_results_of_one_model_merge_into_one_row_with_the_average() {
    let tmp = tempfile::tempdir().unwrap();
    let one = |task: &str, metrics: serde_json::Value, limit: Option<u64>| {
        serde_json::json!({
            "results": {task: metrics}, "average": null, "n_samples": {task: 4},
            "config": {"model": "data/models/m", "params": 1_000_000, "limit": limit, "seconds": 2.0, "tokens": 100},
        })
    };
    let acc = |a: f64| serde_json::json!({"n": 4, "acc": a, "acc_stderr": 0.1});
    let norm = |a: f64, n: f64| {
        let mut v = acc(a);
        v["acc_norm"] = n.into();
        v["acc_norm_stderr"] = 0.1.into();
        v
    };
    // The paper's metric: acc for boolq and winogrande, acc_norm for hellaswag, arc_challenge and openbookqa,
    // acc for piqa and arc_easy. Average of 0.5, 0.75, 0.25, 0.5, 0.5, 0.25, 0.25 = 3.0 / 7.
    let files = [
        ("boolq", acc(0.5)),
        ("piqa", norm(0.75, 0.0)),
        ("hellaswag", norm(1.0, 0.25)),
        ("winogrande", acc(0.5)),
        ("arc_easy", norm(0.5, 0.0)),
        ("arc_challenge", norm(1.0, 0.25)),
        ("openbookqa", norm(1.0, 0.25)),
    ];
    let mut paths = Vec::new();
    for (task, m) in &files {
        let p = tmp.path().join(format!("{task}.json"));
        std::fs::write(&p, one(task, m.clone(), None).to_string()).unwrap();
        paths.push(p);
    }
    // Six tasks: one row, no average yet.
    let six = read_inputs(&paths[..6]).unwrap().zeroshot;
    assert_eq!(six.len(), 1);
    assert!(six[0]["average"].is_null());
    let all = read_inputs(&paths).unwrap().zeroshot;
    assert_eq!(all.len(), 1, "one model, one row");
    let avg = all[0]["average"]["value"].as_f64().unwrap();
    assert!((avg - 3.0 / 7.0).abs() < 1e-12, "{avg}");
    assert_eq!(all[0]["average"]["metrics"]["hellaswag"], "acc_norm");
    assert_eq!(all[0]["config"]["seconds"].as_f64(), Some(14.0));
    assert_eq!(all[0]["n_samples"].as_object().unwrap().len(), 7);
    let points = evals::accuracy_points(&all);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].0, "m (full sets)");
    // Another --limit is another row; the same task twice is an error naming the file.
    let limited = tmp.path().join("limited.json");
    std::fs::write(&limited, one("boolq", acc(0.25), Some(2)).to_string()).unwrap();
    let mut with_limit = paths.clone();
    with_limit.push(limited);
    let rows = read_inputs(&with_limit).unwrap().zeroshot;
    assert_eq!(rows.len(), 2);
    // The table lists full sets first, whatever the order of the inputs.
    let reversed: Vec<_> = rows.iter().rev().cloned().collect();
    let md = evals::zeroshot_section(&reversed);
    let (full, first2) = (md.find("| all |").unwrap(), md.find("| first 2 |").unwrap());
    assert!(full < first2, "{md}");
    let twice = [paths[0].clone(), paths[0].clone()];
    let err = format!("{:#}", read_inputs(&twice).err().expect("duplicate task"));
    assert!(err.contains("boolq.json") && err.contains("task boolq is in two results"), "{err}");
}
