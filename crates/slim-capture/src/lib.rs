//! Calibration capture: tokenized calibration windows through the model, recording the
//! statistics the scorers and the regression need (spec §3.1, §3.2, §13.2).
//!
//! [`calib`] draws the windows; [`stats`] turns one layer's activation taps into
//! [`AttnStats`](slim_artifact::schema::AttnStats) / [`MlpStats`](slim_artifact::schema::MlpStats)
//! with burn tensor ops; [`importance`] is the dense cosine pass; [`taylor`] is the gradient
//! pass of the Taylor scorer.

pub mod calib;
pub mod importance;
pub mod stats;
pub mod taylor;

pub use calib::{calibration_documents, calibration_windows, random_windows, sample_windows, CalibConfig, CalibSource};
pub use importance::layer_importance;
pub use stats::{attn_stats, capture_attn, capture_mlp, mlp_stats, P_CHUNK_BYTES};
pub use taylor::{taylor_stats, TAYLOR_CHUNK};

#[cfg(test)]
mod tests;
