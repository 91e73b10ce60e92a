use super::probe::{Observed, PipelineObs, Probe};
use super::*;
use slim_pipeline::LayerPlan;

fn cpu_observed() -> Observed {
    dispatch(BackendKind::Cpu, Probe { pipeline_dir: None }).unwrap()
}

fn plan(layer: usize, heads: Vec<usize>) -> LayerPlan {
    LayerPlan {
        layer,
        ratio: 0.2,
        heads: heads.len(),
        kv_heads: 1,
        channels: 10,
        kept_heads: Some(heads),
        kept_kv_heads: Some(vec![0]),
    }
}

#[test]
fn rel_max_diff_is_relative_to_the_largest_reference_value() {
    assert_eq!(rel_max_diff(&[1.0, -4.0], &[1.0, -4.0]), 0.0);
    assert!((rel_max_diff(&[1.5, -4.0], &[1.0, -4.0]) - 0.125).abs() < 1e-12);
    assert_eq!(rel_max_diff(&[1.0], &[1.0, 2.0]), f64::INFINITY);
    assert_eq!(rel_max_diff(&[f32::NAN, 1.0], &[1.0, 1.0]), f64::INFINITY);
    assert_eq!(rel_max_diff(&[f32::INFINITY], &[1.0]), f64::INFINITY);
}

#[test]
fn the_cpu_probe_is_deterministic_and_covers_every_fixture() {
    let (a, b) = (cpu_observed(), cpu_observed());
    let names: Vec<&str> = a.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["llama-mha", "llama-gqa", "llama-pruned", "qwen2-pruned"]);
    for (x, y) in a.models.iter().zip(&b.models) {
        assert_eq!(x.logits, y.logits, "{}", x.name);
        assert_eq!(x.greedy, y.greedy, "{}", x.name);
        assert_eq!(x.loglik, y.loglik, "{}", x.name);
        assert_eq!(x.logits.len(), 3 * 19 * 263);
        assert!(x.logits.iter().all(|v| v.is_finite()));
        // 3 documents of 4, 4 and 8 requests.
        assert_eq!(x.loglik.len(), 16);
        assert!(x.loglik.iter().all(|l| l.ll < 0.0 && l.ll.is_finite()), "{:?}", x.loglik);
        assert_eq!(x.lora_nll.to_bits(), y.lora_nll.to_bits(), "{}", x.name);
        assert_eq!(x.lora_grads, y.lora_grads, "{}", x.name);
        // 2 rows of 19 tokens, 17 scored each: a finite loss of more than a nat per prediction.
        assert!(x.lora_nll.is_finite() && x.lora_nll > 34.0, "{}: {}", x.name, x.lora_nll);
        // Every A and B of a rank-4 adapter on seven projections, each with some non-zero gradient.
        assert!(x.lora_grads.iter().all(|g| g.is_finite()) && x.lora_grads.iter().any(|&g| g != 0.0));
    }
    let lines = compare(&a, &b, 1e-4, 1e-3);
    assert_eq!(lines.len(), 24);
    assert!(lines.iter().all(|l| l.pass && l.value == 0.0), "{lines:?}");
}

#[test]
fn a_difference_beyond_the_tolerance_fails_its_check_and_only_that_one() {
    let reference = cpu_observed();
    let scale = reference.models[1].logits.iter().fold(0f32, |m, x| m.max(x.abs()));
    let failing = |t: &Observed| -> Vec<(String, &'static str)> {
        compare(t, &reference, 1e-4, 1e-3).into_iter().filter(|l| !l.pass).map(|l| (l.model, l.check)).collect()
    };

    let mut t = reference.clone();
    t.models[1].logits[7] += 2e-4 * scale;
    assert_eq!(failing(&t), [("llama-gqa".to_string(), "logits")]);
    t.models[1].logits[7] -= 1.5e-4 * scale; // 5e-5 of the scale: within 1e-4
    assert!(failing(&t).is_empty());

    let mut t = reference.clone();
    t.models[2].greedy.push(1);
    assert_eq!(failing(&t), [("llama-pruned".to_string(), "greedy tokens")]);

    let mut t = reference.clone();
    t.models[3].loglik[5].ll *= 1.001;
    assert_eq!(failing(&t), [("qwen2-pruned".to_string(), "zero-shot log-likelihood")]);

    let mut t = reference.clone();
    t.models[0].loglik[0].greedy = !t.models[0].loglik[0].greedy;
    assert_eq!(failing(&t), [("llama-mha".to_string(), "zero-shot is-greedy")]);

    let mut t = reference.clone();
    t.models[1].lora_nll *= 1.001;
    assert_eq!(failing(&t), [("llama-gqa".to_string(), "LoRA loss")]);

    let mut t = reference.clone();
    let gscale = t.models[3].lora_grads.iter().fold(0f32, |m, x| m.max(x.abs()));
    t.models[3].lora_grads[11] += 2e-4 * gscale;
    assert_eq!(failing(&t), [("qwen2-pruned".to_string(), "LoRA gradients")]);
}

#[test]
fn pipeline_decisions_must_match_exactly() {
    let obs = |heads: Vec<usize>, params: u64, logit: f32| Observed {
        models: Vec::new(),
        pipeline: Some(PipelineObs {
            layers: vec![plan(0, vec![0, 1]), plan(1, heads)],
            params_after: params,
            logits: vec![1.0, -2.0, logit],
            seconds: 0.0,
        }),
    };
    let reference = obs(vec![0, 3], 1000, 0.5);
    let checks = |t: &Observed| -> Vec<(&'static str, bool)> {
        compare(t, &reference, 1e-4, 1e-3).into_iter().map(|l| (l.check, l.pass)).collect()
    };
    assert!(checks(&obs(vec![0, 3], 1000, 0.5)).iter().all(|c| c.1));
    let c = checks(&obs(vec![0, 2], 1000, 0.5));
    assert_eq!(c[0], ("kept heads and channels", false));
    assert!(c[1].1 && c[2].1);
    let c = checks(&obs(vec![0, 3], 1001, 0.5));
    assert_eq!(c[1], ("parameters after", false));
    // 1e-2 off on a scale of 2: 5e-3, beyond the pipeline tolerance of 1e-3.
    let c = checks(&obs(vec![0, 3], 1000, 0.51));
    assert_eq!(c[2], ("pruned model's logits", false));
}
