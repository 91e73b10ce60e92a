//! A plain f32 tensor on the host: the currency between checkpoints, artifacts and runtimes.

use anyhow::{ensure, Result};

/// Row-major f32 data with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        ensure!(n == data.len(), "tensor shape {shape:?} needs {n} values, got {}", data.len());
        Ok(Self { shape, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Rows `idx` of a 2-D tensor, in the given order.
    ///
    /// # Shapes
    /// `[r, c]` → `[idx.len(), c]`
    pub fn select_rows(&self, idx: &[usize]) -> Result<Self> {
        ensure!(self.shape.len() == 2, "select_rows needs a 2-D tensor, got {:?}", self.shape);
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut data = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            ensure!(i < r, "row {i} out of range for {r} rows");
            data.extend_from_slice(&self.data[i * c..(i + 1) * c]);
        }
        Ok(Self { shape: vec![idx.len(), c], data })
    }

    /// Columns `idx` of a 2-D tensor, in the given order.
    ///
    /// # Shapes
    /// `[r, c]` → `[r, idx.len()]`
    pub fn select_cols(&self, idx: &[usize]) -> Result<Self> {
        ensure!(self.shape.len() == 2, "select_cols needs a 2-D tensor, got {:?}", self.shape);
        let (r, c) = (self.shape[0], self.shape[1]);
        for &j in idx {
            ensure!(j < c, "column {j} out of range for {c} columns");
        }
        let mut data = Vec::with_capacity(r * idx.len());
        for i in 0..r {
            let row = &self.data[i * c..(i + 1) * c];
            data.extend(idx.iter().map(|&j| row[j]));
        }
        Ok(Self { shape: vec![r, idx.len()], data })
    }

    /// Elements `idx` of a 1-D tensor.
    pub fn select_1d(&self, idx: &[usize]) -> Result<Self> {
        ensure!(self.shape.len() == 1, "select_1d needs a 1-D tensor, got {:?}", self.shape);
        let n = self.shape[0];
        let mut data = Vec::with_capacity(idx.len());
        for &i in idx {
            ensure!(i < n, "index {i} out of range for {n} elements");
            data.push(self.data[i]);
        }
        Ok(Self { shape: vec![idx.len()], data })
    }
}

impl HostTensor {
    /// The transpose of a 2-D tensor.
    ///
    /// # Shapes
    /// `[r, c]` → `[c, r]`
    pub fn transpose2(&self) -> Result<Self> {
        Self::stack_transposed(&[self])
    }

    /// 2-D tensors of the same width stacked by rows, then transposed, in one pass: the columns of the result are
    /// the rows of `parts`, in order. Tiles of 32 × 32 keep both the reads and the writes in cache, so that a
    /// `[vocab, d]` lm_head transposes at memory speed rather than at one cache miss a value.
    ///
    /// # Shapes
    /// `[r_i, c]` for each part → `[c, Σ r_i]`
    pub fn stack_transposed(parts: &[&Self]) -> Result<Self> {
        ensure!(!parts.is_empty(), "stack_transposed needs at least one tensor");
        let c = parts[0].shape.get(1).copied().unwrap_or(0);
        for p in parts {
            ensure!(p.shape.len() == 2, "transposing needs 2-D tensors, got {:?}", p.shape);
            ensure!(p.shape[1] == c, "stacked tensors have {} and {c} columns", p.shape[1]);
        }
        let r: usize = parts.iter().map(|p| p.shape[0]).sum();
        const TILE: usize = 32;
        let mut data: Vec<f32> = Vec::with_capacity(r * c);
        let out = &mut data.spare_capacity_mut()[..r * c];
        let mut row0 = 0;
        for p in parts {
            let rows = p.shape[0];
            for i0 in (0..rows).step_by(TILE) {
                let i1 = (i0 + TILE).min(rows);
                for j0 in (0..c).step_by(TILE) {
                    for j in j0..(j0 + TILE).min(c) {
                        let dst = &mut out[j * r + row0 + i0..j * r + row0 + i1];
                        for (d, i) in dst.iter_mut().zip(i0..i1) {
                            d.write(p.data[i * c + j]);
                        }
                    }
                }
            }
            row0 += rows;
        }
        // SAFETY: every index j·r + i (j < c, i < r) was written above: each part's rows i0..i1 of every tile,
        // at columns row0 + i, cover all r rows of every column j once.
        unsafe { data.set_len(r * c) };
        Ok(Self { shape: vec![c, r], data })
    }
}
