//! Face-recognition backbones in Burn: insightface's IResNet-18/34/50/100/200 and
//! MobileFaceNet, generic over any `B: Backend`, with weight import from insightface's
//! PyTorch checkpoints and ONNX model packs, and self-describing model files.
//!
//! ```no_run
//! use iresnet::{Backbone, BackboneConfig};
//! type B = burn::backend::Flex;
//! let device = Default::default();
//! let model = BackboneConfig::from_name("r50").unwrap().init::<B>(&device).unwrap();
//! let faces = burn::tensor::Tensor::<B, 4>::zeros([1, 3, 112, 112], &device);
//! let embedding = model.embed(faces); // [1, 512]
//! ```

pub mod backbone;
mod conv;
pub mod dataflow;
/// Why a backbone could not be built, loaded or run.
pub mod error;
pub mod export;
pub mod fusion;
pub mod import;
pub mod iresnet;
mod layers;
pub mod mobilefacenet;
mod norm;
pub mod plan;
pub mod preprocess;
pub mod record;

pub use backbone::{
    AnyBackbone, Architecture, Backbone, BackboneConfig, BackboneStats, Describe, ARCH_NAMES,
};
pub use burn;
pub use conv::ConvSpec;
/// The backend seam the backbones convolve through (re-exported so users of these models need not name `cpu-conv`).
pub use cpu_conv::{ConvAutodiffBackend, ConvBackend};
pub use dataflow::{Dataflow, Named, Op, Value};
pub use error::{BackboneError, Result};
pub use fusion::{Fuse, FusionBranch, LateFusion, LateFusionConfig};
pub use iresnet::{IResNet, IResNetConfig};
pub use layers::ConvBnAct;
pub use mobilefacenet::{MbfHead, MobileFaceNet, MobileFaceNetConfig};
pub use preprocess::INPUT_SIZE;

/// The default CPU backend (Burn's `flex`, SIMD and threads on).
pub type CpuBackend = burn::backend::Flex;

/// For binaries whose global allocator is mimalloc: keep freed memory for reuse instead of
/// returning it to the OS after mimalloc's default 10 ms. Training and inference free and
/// reallocate the same large activation buffers every step; returned pages come back zeroed by
/// the kernel, which took 22% of an IResNet-18 training step (perf, docs/performance.md).
/// Leaves the setting alone when `MIMALLOC_PURGE_DELAY` was set. With the `tch` feature, does
/// the same for LibTorch's tensors, which come from the C library's `malloc`.
pub fn keep_freed_memory() {
    #[cfg(all(feature = "tch", target_os = "linux", target_env = "gnu"))]
    keep_glibc_memory();
    // `mi_option_purge_delay`: index 15 in both mimalloc.h headers (v2 and v3) that
    // libmimalloc-sys bundles, which has no constant for it. Its default is 10 ms in v2 and
    // 1000 ms in v3 (the one built by default); -1 means never purge.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: setting a mimalloc option has no preconditions, and index 15 is a defined option.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// LibTorch allocates CPU tensors with glibc's `malloc`, which maps every block over 32 MB afresh
/// and unmaps it when freed, so each step's activations page-fault in zeroed again (19% of an
/// IResNet-18 training step on LibTorch, perf; the step 1.8x faster without it,
/// docs/performance.md). Serves every block from the heap and trims it only past 2 GB free:
/// memory stays near its peak, as with mimalloc above. Leaves glibc alone when `GLIBC_TUNABLES`,
/// `MALLOC_MMAP_MAX_` or `MALLOC_TRIM_THRESHOLD_` is set.
#[cfg(all(feature = "tch", target_os = "linux", target_env = "gnu"))]
fn keep_glibc_memory() {
    let set = [
        "GLIBC_TUNABLES",
        "MALLOC_MMAP_MAX_",
        "MALLOC_TRIM_THRESHOLD_",
    ];
    if set.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    // SAFETY: mallopt only changes glibc's allocation policy; both options are defined.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
