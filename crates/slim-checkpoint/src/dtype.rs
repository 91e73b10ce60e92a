//! The element type weights are stored in: [`WeightDtype`], and the f32 → stored conversion.
//!
//! Every computation here is in f32; a model stored in f16 or bf16 is widened when read
//! ([`crate::WeightSource`], exact) and narrowed when written (round to nearest even).

use serde::Serialize;

/// The element type of stored weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
}

slim_artifact::kinds!(WeightDtype, "weight dtype" {
    F32 => "32-bit floats (4 bytes a parameter)",
    F16 => "IEEE half precision (2 bytes a parameter)",
    Bf16 => "bfloat16 (2 bytes a parameter)",
});

impl WeightDtype {
    /// The safetensors dtype.
    pub fn to_fs(self) -> slim_fs::Dtype {
        match self {
            WeightDtype::F32 => slim_fs::Dtype::F32,
            WeightDtype::F16 => slim_fs::Dtype::F16,
            WeightDtype::Bf16 => slim_fs::Dtype::BF16,
        }
    }

    /// The `torch_dtype` of `config.json`.
    pub fn torch_dtype(self) -> &'static str {
        match self {
            WeightDtype::F32 => "float32",
            WeightDtype::F16 => "float16",
            WeightDtype::Bf16 => "bfloat16",
        }
    }
}

impl WeightDtype {
    /// The dtype of a safetensors tensor, when it is one of these.
    pub fn of_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::F32 => Some(WeightDtype::F32),
            safetensors::Dtype::F16 => Some(WeightDtype::F16),
            safetensors::Dtype::BF16 => Some(WeightDtype::Bf16),
            _ => None,
        }
    }

    /// Appends the little-endian bytes of `values` in this dtype to `out`.
    pub fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        out.reserve(values.len() * self.to_fs().size());
        match self {
            WeightDtype::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            WeightDtype::F16 => out.extend(values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes())),
            WeightDtype::Bf16 => out.extend(values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())),
        }
    }
}

/// Writes f32 `values` as tensor `name` of `w`, stored in `dtype` (`buf` is reused scratch).
pub fn write_values(
    w: &mut slim_fs::SafetensorsWriter,
    name: &str,
    values: &[f32],
    dtype: WeightDtype,
    buf: &mut Vec<u8>,
) -> slim_fs::Result<()> {
    if dtype == WeightDtype::F32 {
        return w.write_f32(name, values);
    }
    buf.clear();
    dtype.encode(values, buf);
    w.write_tensor(name, buf)
}
