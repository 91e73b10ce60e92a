//! LLM-Pruner's first-order Taylor importance (spec §9, `--taylor param_first`,
//! `grouping_strategy=sum`): an element's importance is `|∂ℒ/∂W ⊙ W|` for the dense
//! model's language-model loss on the calibration windows, and a structure's is the sum over
//! every weight the structure removes:
//! - a query head (per-group unit): its `d_h` rows of q_proj and `d_h` columns of o_proj;
//! - a KV group (whole-group unit): its query heads' rows and columns as above, plus its KV
//!   head's `d_h` rows of k_proj and of v_proj;
//! - an MLP channel: its row of gate_proj and of up_proj and its column of down_proj.
//!
//! The sums come from the Taylor capture ([`TaylorLayer`], `slim_capture::taylor`); the
//! lowest are pruned, with no search.

use crate::util::{validate_channels, validate_heads};
use crate::{ChannelInputs, HeadInputs, Scorer, Units};
use anyhow::{ensure, Context, Result};
use slim_artifact::schema::TaylorLayer;

/// The Taylor scorer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Taylor;

fn sums(t: Option<&TaylorLayer>) -> Result<&TaylorLayer> {
    t.context("the taylor scorer needs the Taylor capture (gradients of the dense model), which the inputs lack")
}

impl Scorer for Taylor {
    /// # Shapes
    /// Taylor `q`, `o` `[H]`, `k`, `v` `[H_kv]` → `[U]`
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>> {
        let (h, n_kv) = validate_heads(inputs)?;
        let t = sums(inputs.taylor)?;
        ensure!(
            t.num_heads == h && t.num_kv_heads == n_kv,
            "layer {}: Taylor sums are for {} query / {} KV heads, the layer has {h} / {n_kv}",
            t.layer,
            t.num_heads,
            t.num_kv_heads
        );
        // Units that are whole KV groups also remove their KV head.
        let whole_groups = units.members.len() == n_kv && units.members.iter().all(|m| m.len() == h / n_kv);
        Ok(units
            .members
            .iter()
            .map(|m| {
                let heads: f64 = m.iter().map(|&q| t.q[q] + t.o[q]).sum();
                if whole_groups {
                    let kv = inputs.kv_head_of[m[0]];
                    heads + t.k[kv] + t.v[kv]
                } else {
                    heads
                }
            })
            .collect())
    }

    fn prune_highest(&self) -> bool {
        false
    }

    /// # Shapes
    /// Taylor `gate`, `up`, `down` `[m]` → `[m]`
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        let m = validate_channels(inputs)?;
        let t = sums(inputs.taylor)?;
        ensure!(
            t.intermediate == m,
            "layer {}: Taylor sums are for {} channels, the layer has {m}",
            t.layer,
            t.intermediate
        );
        Ok((0..m).map(|j| t.gate[j] + t.up[j] + t.down[j]).collect())
    }
}
