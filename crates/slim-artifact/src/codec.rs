//! The compact binary encoding of `put_bin`/`get_bin` payloads.
//!
//! bincode is named only here, so that it can be swapped; the manifest records [`NAME`]
//! for every binary payload and readers refuse any other codec.
//! f64 values are written as 8 little-endian bytes, so `Vec<f64>`-heavy statistics
//! round-trip bit for bit.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The codec tag written into manifests for binary payloads.
pub const NAME: &str = "bincode-2.0.1-serde-standard";

/// Why a value could not be encoded or decoded, as bincode put it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` into bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError(e.to_string()))
}

/// Encodes `value` into `out` as [`encode`] would, without holding the bytes; returns how many
/// were written. An I/O error of `out` comes back as a [`CodecError`] too: writers that need to
/// tell it apart keep it themselves.
pub fn encode_into<T: Serialize + ?Sized, W: std::io::Write>(value: &T, out: &mut W) -> Result<usize, CodecError> {
    bincode::serde::encode_into_std_write(value, out, config()).map_err(|e| CodecError(e.to_string()))
}

/// Decodes bytes written by [`encode`]; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, config()).map_err(|e| CodecError(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError(format!("{} trailing bytes after the value", bytes.len() - used)));
    }
    Ok(value)
}
