//! The instruction sets the hand-written loops are compiled for, chosen at run time.
//!
//! The depthwise kernels and the im2col/col2im copies are written once as `#[inline(always)]`
//! generic code and compiled three times: for AVX-512, for AVX2 + FMA, and portably (whatever the
//! build's target allows). The matrix products go through the `gemm` crate, which makes the same
//! choice itself.

use std::sync::OnceLock;

/// An instruction-set path of the hand-written loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust for the build's target: always available, the reference the others are tested against.
    Portable,
    /// AVX2 with fused multiply-add.
    Avx2,
    /// AVX-512 (foundation) with fused multiply-add.
    Avx512,
}

impl Isa {
    /// The best path this CPU runs; `CPU_CONV_ISA=portable|avx2|avx512` caps it (to compare paths).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let available = Isa::available();
            let wanted = std::env::var("CPU_CONV_ISA").ok();
            let wanted = wanted.as_deref().and_then(Isa::from_name);
            match wanted {
                Some(isa) if available.contains(&isa) => isa,
                _ => *available.last().unwrap_or(&Isa::Portable),
            }
        })
    }

    /// Every path this CPU runs, portable first.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                out.push(Isa::Avx512);
            }
        }
        out
    }

    /// The path a name (`portable`, `avx2`, `avx512`) means.
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// Generates `$name(isa, args...)`, which runs the `#[inline(always)]` generic `$body::<FMA>` compiled
/// for the path `isa` names. The caller must have checked `isa` is available (`Isa::available`).
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident => $body:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        $(#[$doc])*
        pub(crate) fn $name(isa: $crate::isa::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                match isa {
                    // SAFETY: `Isa::Avx2`/`Isa::Avx512` are only handed out by `Isa::available`,
                    // after the CPU reported the features these functions are compiled for.
                    $crate::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::isa::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::isa::Isa::Portable => {}
                }
            }
            let _ = isa;
            $body::<false>($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// `a * b + c`, fused where the path has FMA (so results differ from the portable path in the
/// last bits, as PyTorch's do between its paths).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `y += a * x`.
#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = madd::<FMA>(a, x, *y);
    }
}

/// `y[i] += a * x[i * step]`.
#[inline(always)]
pub(crate) fn axpy_strided<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32], step: usize) {
    for (y, &x) in y.iter_mut().zip(x.iter().step_by(step)) {
        *y = madd::<FMA>(a, x, *y);
    }
}

/// `y[i * step] += a * x[i]`.
#[inline(always)]
pub(crate) fn scatter_axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32], step: usize) {
    for (y, &x) in y.iter_mut().step_by(step).zip(x) {
        *y = madd::<FMA>(a, x, *y);
    }
}

/// `sum(a[i] * b[i * step])`, over 16 independent accumulators so the compiler keeps it in
/// vector registers (float sums are not reassociated otherwise).
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32], step: usize) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    if step == 1 {
        let (a, b) = (&a[..a.len().min(b.len())], &b[..a.len().min(b.len())]);
        let mut ca = a.chunks_exact(L);
        let mut cb = b.chunks_exact(L);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..L {
                acc[i] = madd::<FMA>(x[i], y[i], acc[i]);
            }
        }
        for (i, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
            acc[i] = madd::<FMA>(x, y, acc[i]);
        }
    } else {
        for (i, (&x, &y)) in a.iter().zip(b.iter().step_by(step)).enumerate() {
            acc[i % L] = madd::<FMA>(x, y, acc[i % L]);
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_there() {
        assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("neon"), None);
        assert_eq!(Isa::available()[0], Isa::Portable);
        assert!(Isa::available().contains(&Isa::best()));
    }

    #[test]
    fn dot_handles_strides_and_remainders() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..80).map(|i| (i % 5) as f32).collect();
        let want: f32 = (0..37).map(|i| (i * ((2 * i) % 5)) as f32).sum();
        assert_eq!(dot::<false>(&a, &b, 2), want);
        let want1: f32 = (0..37).map(|i| (i * (i % 5)) as f32).sum();
        assert_eq!(dot::<true>(&a, &b, 1), want1);
    }
}
