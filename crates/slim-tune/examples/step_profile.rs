//! Where a training step's time goes, on a SmolLM2-shaped synthetic model (4 layers): the
//! untracked forward of one layer, the tracked forward, its backward, the backward by hand
//! (`Llama::lora_layer_grad`, what training runs on the CPU), and the whole
//! `grad::accumulate` of a micro-batch. `cargo run --release -p slim-tune --example step_profile`.

use burn_autodiff::Autodiff;
use slim_checkpoint::layout::Proj;
use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use slim_model::burn_tensor::{Tensor, TensorData};
use slim_model::{Cpu, Llama, TapSet};
use slim_tune::grad::{accumulate, Batch};
use slim_tune::{train::attach, Adapter, LoraSpec};
use std::time::Instant;

type Ad = Autodiff<Cpu>;

fn main() {
    let (rows, len) = (4, 256);
    let (cfg, w) = SyntheticSpec::dense("llama", 4, 576, 9, 3, 64, 1536, 49152, 1).build();
    let dev = burn_flex::FlexDevice;
    let spec = LoraSpec { rank: 4, alpha: 16.0, dropout: 0.0, targets: Proj::ALL.to_vec() };
    let adapter = Adapter::init(&cfg, &spec, 1).unwrap();
    let mut m = Llama::<Ad>::from_weights(cfg.clone(), &w, &dev).unwrap();
    attach(&mut m, &adapter, &dev);
    let mut rng = SplitMix(3);
    let ids: Vec<u32> = (0..rows * len).map(|_| rng.below(49152) as u32).collect();
    let labels = ids.iter().map(|&t| t as i32).collect();
    let b = Batch { ids: ids.clone(), labels, rows, len };
    let x = m.embed(m.ids_tensor(&ids, rows, len).unwrap());
    let time = |what: &str, f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..3 {
            f();
        }
        println!("{what}: {:.3} s", t.elapsed().as_secs_f64() / 3.0);
    };
    time("layer forward, untracked (fused kernels)", &mut || {
        let _ = m.layer_forward(0, x.clone(), TapSet::NONE).0.inner().into_data();
    });
    time("layer forward, tracked", &mut || {
        let xin = Tensor::<Ad, 3>::from_inner(x.clone().inner()).require_grad();
        let _ = m.layer_forward(0, xin, TapSet::NONE).0.inner().into_data();
    });
    time("layer forward + backward, tracked", &mut || {
        let xin = Tensor::<Ad, 3>::from_inner(x.clone().inner()).require_grad();
        let y = m.layer_forward(0, xin.clone(), TapSet::NONE).0;
        let g = y.sum().backward();
        let _ = xin.grad(&g).unwrap().into_data();
    });
    time("layer backward by hand (forward kept + backward, host kernels)", &mut || {
        let dy = x.clone();
        let _ = m.lora_layer_grad(0, &x, &dy).expect("CPU path").0.inner().into_data();
    });
    let dims = [rows * len, 576];
    let h = Tensor::<Ad, 2>::from_data(TensorData::new(vec![0.1f32; dims[0] * dims[1]], dims), &dev);
    let _ = h;
    let head = slim_tune::grad::head_weight(&m);
    time("accumulate (4 layers + head)", &mut || {
        let mut sums = None;
        accumulate::<Cpu>(&mut m, &b, 1000.0, None, Some(&head), &mut sums).unwrap();
    });
}
