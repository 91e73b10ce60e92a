//! Integration tests of slim-model: the runtime against other implementations of the same model.

mod transformers;
