//! Backend choice at the edge: a runtime enum that picks which monomorphized code runs.
//!
//! The CPU backend (`burn-flex`) is always built; `wgpu` and `cuda` exist only with the
//! cargo features of the same name. Nothing below this module names a concrete backend.

use anyhow::{bail, Result};
use burn_tensor::backend::Backend;
use slim_artifact::Kind;

/// burn's pure-Rust CPU backend, the default for tests and CI.
pub type Cpu = burn_flex::Flex;

/// Which burn backend runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `burn-flex` on the CPU.
    Cpu,
    /// `burn-wgpu` (feature `wgpu`).
    Wgpu,
    /// `burn-cuda` (feature `cuda`).
    Cuda,
}

slim_artifact::kinds!(BackendKind, "backend" {
    Cpu => "burn-flex on the CPU (always built)",
    Wgpu => "burn-wgpu (build with --features wgpu)",
    Cuda => "burn-cuda (build with --features cuda)",
});

impl BackendKind {
    /// The name (as [`Kind::name`], callable without importing the trait).
    pub fn name(self) -> &'static str {
        Kind::name(self)
    }
}

impl std::str::FromStr for BackendKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(<Self as slim_artifact::Kind>::parse(s)?)
    }
}

/// Runs `f` on a thread of rayon's global pool, so that the parallel regions inside it fork from a
/// pool thread: that thread works on a share of each region and takes back any share no idle
/// thread has stolen yet. Called from any other thread, each region is handed to the pool while the
/// caller sleeps until it is done: a wake-up of a pool thread and one of the caller per region,
/// which decoding (about ten regions a layer, each tens of microseconds) pays hundreds of times
/// per token.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Work that runs generically on any backend.
pub trait BackendRun {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` with `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Runs `work` on the backend `kind`, erroring if that backend was not compiled in. On the CPU it
/// runs on a thread of rayon's pool ([`on_pool`]).
pub fn dispatch<W: BackendRun + Send>(kind: BackendKind, work: W) -> Result<W::Output>
where
    W::Output: Send,
{
    match kind {
        BackendKind::Cpu => on_pool(|| work.run::<Cpu>(burn_flex::FlexDevice)),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => work.run::<burn_wgpu::Wgpu>(burn_wgpu::WgpuDevice::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => work.run::<burn_cuda::Cuda>(burn_cuda::CudaDevice::new(0)),
        #[allow(unreachable_patterns)]
        other => bail!("backend `{}` is not compiled in: rebuild with `--features {}`", other.name(), other.name()),
    }
}
