//! The magnitude baseline: a head unit's importance is the Frobenius norm of its o_proj
//! columns (summed over a group's heads), a channel's the norm of its down_proj column.
//! The lowest are pruned; there is no search.

use crate::util::{validate_channels, validate_heads};
use crate::{ChannelInputs, HeadInputs, Scorer, Units};
use anyhow::Result;

/// The magnitude scorer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Magnitude;

impl Scorer for Magnitude {
    /// # Shapes
    /// `o_proj` `[d, H·d_h]` → `[U]`
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>> {
        validate_heads(inputs)?;
        let (d, dh) = (inputs.stats.hidden, inputs.stats.head_dim);
        let cols = inputs.o_proj.shape[1];
        let head_norm = |h: usize| -> f64 {
            (0..d)
                .map(|i| {
                    inputs.o_proj.data[i * cols + h * dh..i * cols + (h + 1) * dh]
                        .iter()
                        .map(|&w| (w as f64).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                .sqrt()
        };
        Ok(units.members.iter().map(|m| m.iter().map(|&h| head_norm(h)).sum()).collect())
    }

    fn prune_highest(&self) -> bool {
        false
    }

    /// # Shapes
    /// `down` `[d, m]` → `[m]`
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        let m = validate_channels(inputs)?;
        let d = inputs.stats.hidden;
        let w = &inputs.down.data;
        Ok((0..m).map(|j| (0..d).map(|i| (w[i * m + j] as f64).powi(2)).sum::<f64>().sqrt()).collect())
    }
}
