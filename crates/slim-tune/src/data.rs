//! Training examples, the validation split, the order of every epoch and micro-batches.
//!
//! The crate takes token ids; reading and tokenizing texts is the caller's (`slimllm tune`).
//! Every order here is a function of the seed alone, so a resumed run sees the batches an
//! uninterrupted one would have seen.

use crate::grad::{Batch, IGNORE};
use anyhow::{ensure, Result};
use slim_checkpoint::synthetic::SplitMix;

/// One training sequence: its token ids and the labels to score (`IGNORE` where not scored).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Labels, one per id (`IGNORE` where not scored).
    pub labels: Vec<i32>,
}

impl Example {
    /// A plain-text sequence: every token is scored.
    pub fn plain(ids: &[u32]) -> Self {
        Self { ids: ids.to_vec(), labels: ids.iter().map(|&t| t as i32).collect() }
    }
}

impl Example {
    /// An instruction example as LLM-Pruner's post-training builds it: the tokens of prompt +
    /// response cut to `cutoff`, EOS appended when there is room and the text does not end
    /// with it, and the first `prompt.len()` labels (the prompt tokenized on its own, also cut to
    /// `cutoff`) not scored (`train_on_inputs = False`).
    pub fn masked(prompt: &[u32], full: &[u32], cutoff: usize, eos: Option<u32>) -> Self {
        let mut ids: Vec<u32> = full[..full.len().min(cutoff)].to_vec();
        if let Some(e) = eos {
            if ids.last() != Some(&e) && ids.len() < cutoff {
                ids.push(e);
            }
        }
        let masked = prompt.len().min(cutoff).min(ids.len());
        let labels = ids.iter().enumerate().map(|(i, &t)| if i < masked { IGNORE } else { t as i32 }).collect();
        Self { ids, labels }
    }
}

/// Non-overlapping plain-text windows of `len` tokens (the remainder dropped).
pub fn windows(ids: &[u32], len: usize) -> Vec<Example> {
    ids.chunks_exact(len).map(Example::plain).collect()
}

/// A seeded permutation of `0..n` (Fisher–Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p
}

/// Splits `examples` into training and validation sets: `val` examples drawn at random
/// (seeded), the rest for training, each set in its original order.
pub fn split(examples: Vec<Example>, val: usize, seed: u64) -> Result<(Vec<Example>, Vec<Example>)> {
    ensure!(
        val < examples.len(),
        "--val-size {val} leaves no training example of {} (lower --val-size)",
        examples.len()
    );
    let mut is_val = vec![false; examples.len()];
    for &i in permutation(examples.len(), seed ^ 0x0056_414C)[..val].iter() {
        is_val[i] = true;
    }
    let (v, t): (Vec<_>, Vec<_>) = examples.into_iter().zip(is_val).partition(|(_, v)| *v);
    Ok((t.into_iter().map(|(e, _)| e).collect(), v.into_iter().map(|(e, _)| e).collect()))
}

/// The order of the training examples in `epoch` (a fresh permutation per epoch).
pub fn epoch_order(n: usize, epoch: u64, seed: u64) -> Vec<usize> {
    permutation(n, seed.wrapping_add(epoch.wrapping_mul(0x1000_0001)))
}

/// Examples as one batch, right-padded with `pad` to the longest (padding is not scored, and
/// with causal attention it does not change the positions before it).
pub fn collate(examples: &[&Example], pad: u32) -> Batch {
    let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(examples.len() * len);
    let mut labels = Vec::with_capacity(examples.len() * len);
    for e in examples {
        ids.extend_from_slice(&e.ids);
        ids.extend(std::iter::repeat_n(pad, len - e.ids.len()));
        labels.extend_from_slice(&e.labels);
        labels.extend(std::iter::repeat_n(IGNORE, len - e.labels.len()));
    }
    Batch { ids, labels, rows: examples.len(), len }
}
