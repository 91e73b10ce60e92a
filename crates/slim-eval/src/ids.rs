//! Token ids checked against the model's vocabulary before they reach the runtime, so that a tokenizer or an
//! input of another model is reported with the offending id and where it sits, not as a failure deep in a pass.

use anyhow::{bail, Result};

/// Fails on the first id of `ids` that is not below `vocab`, naming it and its position; callers add which input
/// the ids came from.
pub fn check_token_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        bail!("token id {id} (token {i} of {}) is out of range: the model's vocabulary has {vocab} ids", ids.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_out_of_range_id_is_named_with_its_position() {
        assert!(super::check_token_ids(&[0, 5, 9], 10).is_ok());
        let e = super::check_token_ids(&[0, 12, 10], 10).unwrap_err().to_string();
        assert!(e.contains("token id 12") && e.contains("token 1 of 3") && e.contains("10 ids"), "{e}");
    }
}
