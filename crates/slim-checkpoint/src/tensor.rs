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
    /// Transpose of a 2-D tensor, materialized.
    ///
    /// # Shapes
    /// `[r, c]` → `[c, r]`
    pub fn transpose2(&self) -> Result<Self> {
        ensure!(self.shape.len() == 2, "transpose2 needs a 2-D tensor, got {:?}", self.shape);
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut data = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                data[j * r + i] = self.data[i * c + j];
            }
        }
        Ok(Self { shape: vec![c, r], data })
    }
}
