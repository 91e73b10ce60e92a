//! The burn forward pass against a direct f64 implementation written from the HF
//! definition, on tiny seeded models: MHA, GQA, Qwen2 biases, and uneven pruned layers.

use crate::{Cpu, KvCache, Llama, TapSet};
use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use slim_checkpoint::{LayerShape, ModelConfig, Weights};

type Dev = burn_flex::FlexDevice;

fn mat(w: &Weights, name: &str) -> (Vec<f64>, usize, usize) {
    let t = w.get(name).unwrap();
    (t.data.iter().map(|&x| x as f64).collect(), t.shape[0], *t.shape.get(1).unwrap_or(&1))
}

/// y[n, out] = x[n, in] · W[out, in]ᵀ (+ b)
fn linear(x: &[Vec<f64>], w: &Weights, prefix: &str, bias: bool) -> Vec<Vec<f64>> {
    let (wd, out, inn) = mat(w, &format!("{prefix}.weight"));
    let b = bias.then(|| mat(w, &format!("{prefix}.bias")).0);
    x.iter()
        .map(|row| {
            (0..out)
                .map(|o| (0..inn).map(|i| row[i] * wd[o * inn + i]).sum::<f64>() + b.as_ref().map_or(0.0, |b| b[o]))
                .collect()
        })
        .collect()
}

fn rms(x: &[Vec<f64>], w: &Weights, name: &str, eps: f64) -> Vec<Vec<f64>> {
    let g = mat(w, name).0;
    x.iter()
        .map(|r| {
            let s = (r.iter().map(|v| v * v).sum::<f64>() / r.len() as f64 + eps).sqrt();
            r.iter().zip(&g).map(|(v, g)| v / s * g).collect()
        })
        .collect()
}

fn rope(x: &mut [f64], pos: usize, theta: f64) {
    let dh = x.len();
    let half = dh / 2;
    let orig = x.to_vec();
    for i in 0..dh {
        let f = 1.0 / theta.powf((2 * (i % half)) as f64 / dh as f64);
        let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
        let rot = if i < half { -orig[i + half] } else { orig[i - half] };
        x[i] = orig[i] * c + rot * s;
    }
}

/// Logits of one sequence, `[len, vocab]`.
pub(crate) fn reference_logits(cfg: &ModelConfig, w: &Weights, ids: &[u32]) -> Vec<Vec<f64>> {
    let (d, dh, t) = (cfg.hidden_size, cfg.head_dim, ids.len());
    let emb = mat(w, "model.embed_tokens.weight").0;
    let mut x: Vec<Vec<f64>> = ids.iter().map(|&i| emb[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
    for (l, s) in cfg.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        let a = rms(&x, w, &format!("{p}.input_layernorm.weight"), cfg.rms_norm_eps);
        let q = linear(&a, w, &format!("{p}.self_attn.q_proj"), cfg.qkv_bias);
        let k = linear(&a, w, &format!("{p}.self_attn.k_proj"), cfg.qkv_bias);
        let v = linear(&a, w, &format!("{p}.self_attn.v_proj"), cfg.qkv_bias);
        let mut z = vec![vec![0.0; s.num_heads * dh]; t];
        for h in 0..s.num_heads {
            let kvh = s.kv_head_of[h];
            let qs: Vec<Vec<f64>> = (0..t)
                .map(|i| {
                    let mut r = q[i][h * dh..(h + 1) * dh].to_vec();
                    rope(&mut r, i, cfg.rope_theta);
                    r
                })
                .collect();
            let ks: Vec<Vec<f64>> = (0..t)
                .map(|i| {
                    let mut r = k[i][kvh * dh..(kvh + 1) * dh].to_vec();
                    rope(&mut r, i, cfg.rope_theta);
                    r
                })
                .collect();
            for i in 0..t {
                let sc: Vec<f64> = (0..=i)
                    .map(|j| qs[i].iter().zip(&ks[j]).map(|(a, b)| a * b).sum::<f64>() / (dh as f64).sqrt())
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for j in 0..=i {
                    for c in 0..dh {
                        z[i][h * dh + c] += e[j] / sum * v[j][kvh * dh + c];
                    }
                }
            }
        }
        let o = linear(&z, w, &format!("{p}.self_attn.o_proj"), s.o_proj_bias);
        for i in 0..t {
            for c in 0..d {
                x[i][c] += o[i][c];
            }
        }
        let u = rms(&x, w, &format!("{p}.post_attention_layernorm.weight"), cfg.rms_norm_eps);
        let g = linear(&u, w, &format!("{p}.mlp.gate_proj"), false);
        let up = linear(&u, w, &format!("{p}.mlp.up_proj"), false);
        let act: Vec<Vec<f64>> = g
            .iter()
            .zip(&up)
            .map(|(g, u)| g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect())
            .collect();
        let y = linear(&act, w, &format!("{p}.mlp.down_proj"), s.down_proj_bias);
        for i in 0..t {
            for c in 0..d {
                x[i][c] += y[i][c];
            }
        }
    }
    let h = rms(&x, w, "model.norm.weight", cfg.rms_norm_eps);
    let head = if cfg.tie_word_embeddings { "model.embed_tokens" } else { "lm_head" };
    linear(&h, w, head, false)
}

fn check_against_reference(spec: &SyntheticSpec, batch: usize, len: usize) {
    let (cfg, w) = spec.build();
    let mut rng = SplitMix(spec.seed ^ 0xABCD);
    let ids: Vec<u32> = (0..batch * len).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let dev = Dev::default();
    let model = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
    let logits = model.forward(model.ids_tensor(&ids, batch, len).unwrap());
    assert_eq!(logits.dims(), [batch, len, cfg.vocab_size]);
    let got = logits.into_data().into_vec::<f32>().unwrap();
    let mut max_err = 0f64;
    for b in 0..batch {
        let want = reference_logits(&cfg, &w, &ids[b * len..(b + 1) * len]);
        for (i, row) in want.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                let g = got[(b * len + i) * cfg.vocab_size + j] as f64;
                max_err = max_err.max((g - x).abs() / (1.0 + x.abs()));
            }
        }
    }
    assert!(max_err < 2e-4, "max relative error {max_err} against the f64 reference");
}

#[test]
fn mha_matches_reference() {
    check_against_reference(&SyntheticSpec::dense("llama", 2, 24, 3, 3, 8, 37, 53, 7), 2, 9);
}

#[test]
fn gqa_matches_reference() {
    check_against_reference(&SyntheticSpec::dense("llama", 3, 30, 6, 2, 10, 43, 61, 11), 3, 7);
}

#[test]
fn qwen2_biases_and_untied_head_match_reference() {
    check_against_reference(&SyntheticSpec::dense("qwen2", 2, 20, 4, 2, 6, 29, 47, 13), 2, 11);
}

#[test]
fn uneven_pruned_layers_with_biases_match_reference() {
    let mut spec = SyntheticSpec::dense("llama", 3, 24, 6, 3, 8, 40, 50, 17);
    spec.layers[0] = LayerShape {
        num_heads: 3,
        num_kv_heads: 3,
        kv_head_of: vec![0, 1, 2],
        intermediate_size: 13,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    spec.layers[2] = LayerShape {
        num_heads: 4,
        num_kv_heads: 2,
        kv_head_of: vec![0, 0, 1, 1],
        intermediate_size: 40,
        o_proj_bias: false,
        down_proj_bias: true,
    };
    check_against_reference(&spec, 2, 6);
}

#[test]
fn layerwise_taps_are_consistent_with_the_layer_output() {
    let (cfg, w) = SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 21, 31, 5).build();
    let dev = Dev::default();
    let model = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
    let ids: Vec<u32> = (0..10).map(|i| (i * 7 % 31) as u32).collect();
    let x = model.embed(model.ids_tensor(&ids, 2, 5).unwrap());
    let (y, taps) = model.layer_forward(0, x.clone(), TapSet::ALL);
    let (y2, none) = model.layer_forward(0, x.clone(), TapSet::NONE);
    assert!(none.attn_heads.is_none() && none.mlp_act.is_none());
    assert_eq!(y.clone().into_data().into_vec::<f32>().unwrap(), y2.into_data().into_vec::<f32>().unwrap());
    assert_eq!(taps.attn_heads.unwrap().dims(), [10, 16]);
    assert_eq!(taps.mlp_act.as_ref().unwrap().dims(), [10, 21]);
    // output = input + attention output + mlp output, and mlp output = act · W_downᵀ.
    let mlp_out = taps.mlp_out.unwrap();
    let down = crate::host_to_tensor::<Cpu, 2>(
        &w.get("model.layers.0.mlp.down_proj.weight").unwrap().transpose2().unwrap(),
        &dev,
    )
    .unwrap();
    let diff = (taps.mlp_act.unwrap().matmul(down) - mlp_out).abs().max().into_scalar();
    assert!(diff < 1e-5, "mlp_out differs from act·W_down by {diff}");
}

/// Prompt through the cache, then one token at a time: every step's logits equal those of
/// a full forward pass over the whole prefix.
fn check_cache_matches_recompute(spec: &SyntheticSpec, batch: usize, prompt: usize, steps: usize) {
    let (cfg, w) = spec.build();
    let dev = Dev::default();
    let model = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
    let total = prompt + steps;
    let mut rng = SplitMix(99);
    let ids: Vec<u32> = (0..batch * total).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let seq = |len: usize| -> Vec<u32> { (0..batch).flat_map(|b| ids[b * total..b * total + len].to_vec()).collect() };
    let cols = |from: usize, to: usize| -> Vec<u32> {
        (0..batch).flat_map(|b| ids[b * total + from..b * total + to].to_vec()).collect()
    };
    let (mut cache, mut last_only_cache) = (model.new_cache(batch), model.new_cache(batch));
    let mut fed = 0;
    for step in 0..=steps {
        let upto = prompt + step;
        let new =
            model.forward_cached(model.ids_tensor(&cols(fed, upto), batch, upto - fed).unwrap(), &mut cache).unwrap();
        // The same step for the last positions only (what generation does): their last layer's queries and MLP
        // and their lm_head alone, every position's keys and values cached, the next steps continuing from them.
        let ids = model.ids_tensor(&cols(fed, upto), batch, upto - fed).unwrap();
        let last_only = model.logits(model.last_hidden_cached(ids, &mut last_only_cache).unwrap());
        assert_eq!(last_only.dims(), [batch, 1, cfg.vocab_size]);
        fed = upto;
        assert_eq!(cache.len(), upto);
        let full = model.forward(model.ids_tensor(&seq(upto), batch, upto).unwrap());
        let v = cfg.vocab_size;
        let last_new = new
            .clone()
            .slice([0..batch, new.dims()[1] - 1..new.dims()[1], 0..v])
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        let last_full = full.slice([0..batch, upto - 1..upto, 0..v]).into_data().into_vec::<f32>().unwrap();
        let err = last_new.iter().zip(&last_full).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
        assert!(err < 1e-5, "step {step}: cached logits differ from recomputed by {err}");
        let last_only = last_only.into_data().into_vec::<f32>().unwrap();
        let err = last_only.iter().zip(&last_new).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
        assert!(err < 1e-5, "step {step}: the last position's logits alone differ by {err}");
        let argmax = |x: &[f32]| x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        for b in 0..batch {
            assert_eq!(
                argmax(&last_new[b * v..(b + 1) * v]),
                argmax(&last_full[b * v..(b + 1) * v]),
                "step {step}, sequence {b}: greedy token differs"
            );
        }
    }
}

#[test]
fn kv_cache_matches_recompute_gqa() {
    check_cache_matches_recompute(&SyntheticSpec::dense("llama", 3, 30, 6, 2, 10, 43, 61, 11), 2, 5, 6);
}

#[test]
fn kv_cache_matches_recompute_on_uneven_pruned_layers_with_biases() {
    let mut spec = SyntheticSpec::dense("qwen2", 3, 24, 6, 3, 8, 40, 50, 17);
    spec.layers[0] = LayerShape {
        num_heads: 3,
        num_kv_heads: 3,
        kv_head_of: vec![0, 1, 2],
        intermediate_size: 13,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    spec.layers[2] = LayerShape {
        num_heads: 4,
        num_kv_heads: 2,
        kv_head_of: vec![0, 0, 1, 1],
        intermediate_size: 40,
        o_proj_bias: false,
        down_proj_bias: true,
    };
    check_cache_matches_recompute(&spec, 1, 4, 7);
}

#[test]
fn chat_template_renders_like_hf() {
    // SmolLM2's template, as its tokenizer_config.json carries it; the expected string is
    // what transformers' apply_chat_template(..., add_generation_prompt=True) returns.
    let dir = tempfile::tempdir().unwrap();
    let template = concat!(
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}",
        "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, ",
        "trained by Hugging Face<|im_end|>\\n' }}",
        "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}",
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    );
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::json!({"chat_template": template, "bos_token": "<|im_start|>"}).to_string(),
    )
    .unwrap();
    let got = crate::Tokenizer::chat_prompt(dir.path(), &[("user", "Hi!")]).unwrap();
    let want = concat!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    );
    assert_eq!(got, want);
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let err = crate::Tokenizer::chat_prompt(dir.path(), &[("user", "Hi!")]).unwrap_err().to_string();
    assert!(err.contains("no chat_template"), "{err}");
}

/// An empty model fed one layer at a time (each unloaded after use) computes exactly what the
/// whole model computes, on uneven pruned GQA layers; unloaded parts are named when run.
#[test]
fn a_model_streamed_one_layer_at_a_time_equals_the_whole_model() {
    let mut spec = SyntheticSpec::dense("qwen2", 3, 24, 6, 3, 8, 40, 50, 19);
    spec.layers[1] = LayerShape {
        num_heads: 4,
        num_kv_heads: 2,
        kv_head_of: vec![0, 0, 1, 1],
        intermediate_size: 17,
        o_proj_bias: true,
        down_proj_bias: false,
    };
    let (cfg, w) = spec.build();
    let dev = Dev::default();
    let whole = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
    let ids: Vec<u32> = (0..14).map(|i| (i * 11 % 50) as u32).collect();
    let mut want = whole.embed(whole.ids_tensor(&ids, 2, 7).unwrap());
    let mut m = Llama::<Cpu>::empty(cfg.clone(), &dev).unwrap();
    m.load_embedding(w.get("model.embed_tokens.weight").unwrap().clone()).unwrap();
    let mut got = m.embed(m.ids_tensor(&ids, 2, 7).unwrap());
    for l in 0..cfg.num_layers() {
        let mut lw = Weights::new();
        for t in slim_checkpoint::layout::layer_tensors(&cfg, l) {
            lw.insert(t.hf_name(), w.get(&t.hf_name()).unwrap().clone());
        }
        m.load_layer(l, &lw).unwrap();
        assert!(m.is_layer_loaded(l) && (l == 0 || !m.is_layer_loaded(l - 1)));
        got = m.layer_forward(l, got, TapSet::NONE).0;
        want = whole.layer_forward(l, want, TapSet::NONE).0;
        m.unload_layer(l);
    }
    assert_eq!(got.into_data().into_vec::<f32>().unwrap(), want.into_data().into_vec::<f32>().unwrap());
    let x = m.embed(m.ids_tensor(&ids, 2, 7).unwrap());
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.layer_forward(2, x, TapSet::NONE)));
    let msg = *e.err().unwrap().downcast::<String>().unwrap();
    assert_eq!(msg, "layer 2 of this model is not loaded");
    let bad = slim_checkpoint::HostTensor::new(vec![49, 24], vec![0.0; 49 * 24]).unwrap();
    let e = m.load_embedding(bad).unwrap_err().to_string();
    assert!(e.contains("[49, 24], expected [50, 24]"), "{e}");
}

/// `replace_attention` swaps a loaded layer's attention for a pruned one (fewer heads, GQA, an o
/// bias) and keeps its MLP and post-attention norm: the layer then computes what a layer built
/// whole from the new attention and the old MLP computes, to the bit. A shape that changes the MLP
/// is refused, naming both widths.
#[test]
fn replacing_a_layers_attention_keeps_its_mlp() {
    let old_spec = SyntheticSpec::dense("qwen2", 3, 24, 6, 3, 8, 40, 50, 23);
    let (cfg, old) = old_spec.build();
    let mut new_spec = SyntheticSpec::dense("qwen2", 3, 24, 6, 3, 8, 40, 50, 29);
    let shape = LayerShape {
        num_heads: 4,
        num_kv_heads: 2,
        kv_head_of: vec![0, 0, 1, 1],
        intermediate_size: 40,
        o_proj_bias: true,
        down_proj_bias: false,
    };
    new_spec.layers[1] = shape.clone();
    let (new_cfg, new) = new_spec.build();
    let names = |c: &ModelConfig| -> Vec<String> {
        slim_checkpoint::layout::layer_tensors(c, 1).into_iter().map(|t| t.hf_name()).collect()
    };
    let is_mlp = |n: &str| n.contains(".mlp.") || n.contains("post_attention_layernorm");
    let mut mixed_cfg = cfg.clone();
    mixed_cfg.layers[1] = shape.clone();
    let mut mixed = old.clone();
    let mut attention = Weights::new();
    for n in names(&new_cfg).into_iter().filter(|n| !is_mlp(n)) {
        mixed.insert(n.clone(), new.get(&n).unwrap().clone());
        attention.insert(n.clone(), new.get(&n).unwrap().clone());
    }
    let dev = Dev::default();
    let whole = Llama::<Cpu>::from_weights(mixed_cfg, &mixed, &dev).unwrap();
    let mut m = Llama::<Cpu>::empty(cfg.clone(), &dev).unwrap();
    let mut lw = Weights::new();
    for n in names(&cfg) {
        lw.insert(n.clone(), old.get(&n).unwrap().clone());
    }
    m.load_layer(1, &lw).unwrap();
    m.replace_attention(1, shape.clone(), &attention).unwrap();
    assert_eq!(m.config().layers[1], shape);
    let ids: Vec<u32> = (0..14).map(|i| (i * 13 % 50) as u32).collect();
    let x = whole.embed(whole.ids_tensor(&ids, 2, 7).unwrap());
    let got = m.layer_forward(1, x.clone(), TapSet::NONE).0.into_data().into_vec::<f32>().unwrap();
    let want = whole.layer_forward(1, x, TapSet::NONE).0.into_data().into_vec::<f32>().unwrap();
    assert_eq!(got, want);

    let mut wider = shape;
    wider.intermediate_size = 41;
    let e = format!("{:#}", m.replace_attention(1, wider, &attention).unwrap_err());
    assert!(e.contains("MLP (41 channels) is not the loaded one's (40)"), "{e}");
    assert!(!m.is_layer_loaded(1));
}

/// Projections kept in f16 or bf16 (`Llama::load_in`) compute what the f32 model holding the same
/// (half-representable) values computes, up to the order of the sums: prefill (panels through
/// gemm) and cached decoding (the column-blocked product), on uneven qwen2 layers with biases and
/// an untied head. In f32, `load_in` equals `from_weights` to the bit.
#[test]
fn half_precision_weights_compute_like_their_f32_values() {
    use slim_checkpoint::WeightDtype;
    let mut spec = SyntheticSpec::dense("qwen2", 3, 40, 5, 5, 8, 70, 97, 31);
    spec.layers[1] = LayerShape {
        num_heads: 3,
        num_kv_heads: 1,
        kv_head_of: vec![0, 0, 0],
        intermediate_size: 33,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    let dev = Dev::default();
    let (batch, len) = (3, 7);
    let mut rng = SplitMix(5);
    for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
        let (cfg, mut w) = spec.build();
        let names: Vec<String> = w.names().map(str::to_owned).collect();
        for n in &names {
            let mut t = w.get(n).unwrap().clone();
            match dtype {
                WeightDtype::F16 => t.data.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
                WeightDtype::Bf16 => t.data.iter_mut().for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
                WeightDtype::F32 => {}
            }
            w.insert(n.clone(), t);
        }
        let dir = tempfile::tempdir().unwrap();
        slim_checkpoint::save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
        let full = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
        let half = Llama::<Cpu>::load_in(dir.path(), &dev, dtype).unwrap();
        let stored = match dtype {
            WeightDtype::F32 => burn_tensor::DType::F32,
            WeightDtype::F16 => burn_tensor::DType::F16,
            WeightDtype::Bf16 => burn_tensor::DType::BF16,
        };
        assert_eq!(half.kept_dtypes(1), vec![stored; 5]);
        let ids: Vec<u32> = (0..batch * len).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
        let logits = |m: &Llama<Cpu>| m.forward(m.ids_tensor(&ids, batch, len).unwrap()).into_data().to_vec::<f32>();
        let (a, b) = (logits(&full).unwrap(), logits(&half).unwrap());
        let err =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0f32, f32::max);
        if dtype == WeightDtype::F32 {
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "f32 load_in differs");
        } else {
            assert!(err(&a, &b) < 1e-5, "{dtype:?} prefill: {}", err(&a, &b));
        }
        // Decoding one token at a time after a prompt: one row per product.
        let one: Vec<u32> = ids[..len].to_vec();
        let (mut ca, mut cb) = (full.new_cache(1), half.new_cache(1));
        for t in 0..len {
            let step = |m: &Llama<Cpu>, c: &mut KvCache<Cpu>| {
                m.forward_cached(m.ids_tensor(&one[t..t + 1], 1, 1).unwrap(), c)
                    .unwrap()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
            };
            let (x, y) = (step(&full, &mut ca), step(&half, &mut cb));
            assert!(err(&x, &y) < 1e-5, "{dtype:?} decode step {t}: {}", err(&x, &y));
        }
    }
}
