//! The random baseline: every unit and channel gets an independent uniform score drawn from
//! a seeded SplitMix64 stream, and the lowest are pruned. It is the floor every scorer must
//! beat.
//!
//! The stream depends only on the seed, the layer index (`stats.layer`) and what is scored
//! (heads in per-group mode, KV groups in whole-group mode, or MLP channels), never on the
//! weights or statistics, so a selection is reproducible across runs and machines and
//! differs from layer to layer.
//! [`crate::ScorerKind::Random`] uses [`RANDOM_SEED`]; other seeds go through
//! [`crate::select_heads_with`] and [`crate::select_channels_with`] with [`Random::new`].

use crate::util::{validate_channels, validate_heads};
use crate::{ChannelInputs, HeadInputs, Scorer, Units};
use anyhow::Result;
use slim_checkpoint::synthetic::SplitMix;

/// The seed of [`crate::ScorerKind::Random`].
pub const RANDOM_SEED: u64 = 0x5EED_5C0A_E5EE_D001;

/// The random scorer with its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Random {
    /// Seed of every stream.
    pub seed: u64,
}

impl Random {
    /// A random scorer with seed `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// `count` uniform draws in (0, 1) from the stream of (seed, layer, what).
    fn draws(&self, layer: usize, what: Stream, count: usize) -> Vec<f64> {
        // Each input passes through SplitMix's output mixer before being combined, so
        // neighbouring seeds, layers and streams give unrelated sequences.
        let mix = |x: u64| SplitMix(x).next_u64();
        let state = mix(self.seed) ^ mix(mix(layer as u64) ^ what as u64);
        let mut rng = SplitMix(state);
        (0..count).map(|_| rng.unit()).collect()
    }
}

/// What a stream scores.
#[derive(Clone, Copy)]
enum Stream {
    /// One draw per attention unit (query heads or KV groups, per the mode), in unit order.
    Heads = 1,
    /// One draw per MLP channel.
    Channels = 2,
}

impl Scorer for Random {
    /// One uniform draw per unit, in unit order.
    ///
    /// # Shapes
    /// → `[U]`
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>> {
        validate_heads(inputs)?;
        Ok(self.draws(inputs.stats.layer, Stream::Heads, units.members.len()))
    }

    fn prune_highest(&self) -> bool {
        false
    }

    /// One uniform draw per channel.
    ///
    /// # Shapes
    /// → `[m]`
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        let m = validate_channels(inputs)?;
        Ok(self.draws(inputs.stats.layer, Stream::Channels, m))
    }
}
