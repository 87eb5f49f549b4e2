//! Every kernel bit-exact with a naive triple loop on random shapes, odd sizes included; bad
//! buffers refused.

use quantize::gemm::{gemm_u8i8, pad_rows, GemmError, Kernel, PackedWeights};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn naive(a: &[u8], b: &[i8], m: usize, k: usize, n: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for r in 0..m {
        for j in 0..n {
            c[r * n + j] = (0..k)
                .map(|t| a[r * k + t] as i32 * b[t * n + j] as i32)
                .sum();
        }
    }
    c
}

fn kernels() -> Vec<Kernel> {
    let all = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni];
    let found: Vec<Kernel> = all.into_iter().filter(|k| k.available()).collect();
    // On this project's machines (x86-64 with AVX2, AVX-512 VNNI on the dev box) the SIMD paths
    // must really run, not be skipped.
    #[cfg(target_arch = "x86_64")]
    assert!(found.contains(&Kernel::Avx2), "AVX2 kernel not available");
    found
}

#[test]
fn every_kernel_equals_the_naive_product_on_random_shapes() {
    let mut rng = StdRng::seed_from_u64(9);
    let kernels = kernels();
    let mut shapes = vec![
        (1, 1, 1),
        (1, 3, 17),
        (3, 5, 16),
        (4, 4, 15),
        (5, 9, 33),
        (7, 64, 64),
        (67, 27, 31),
    ];
    // Convolution-like shapes: im2col rows = pixels, k = 3 x 3 x Cin, n = Cout; extremes included.
    shapes.extend([(49, 576, 64), (33, 1152, 128), (70, 8, 1)]);
    for _ in 0..30 {
        shapes.push((
            rng.random_range(1..80),
            rng.random_range(1..300),
            rng.random_range(1..150),
        ));
    }
    for (m, k, n) in shapes {
        let a: Vec<u8> = (0..m * k).map(|_| rng.random()).collect();
        let b: Vec<i8> = (0..k * n).map(|_| rng.random()).collect();
        // The extremes of both ranges, where a saturating instruction would be wrong.
        let (mut a, mut b) = (a, b);
        a[0] = 255;
        b[0] = -128;
        let expected = naive(&a, &b, m, k, n);
        let w = PackedWeights::pack(&b, k, n);
        let padded = pad_rows(&a, m, k, w.lda());
        for &kernel in &kernels {
            let mut c = vec![0i32; m * n];
            gemm_u8i8(&padded, m, &w, &mut c, kernel).unwrap();
            assert_eq!(c, expected, "{kernel:?} m {m} k {k} n {n}");
        }
        let sums: Vec<i32> = (0..n)
            .map(|j| (0..k).map(|t| b[t * n + j] as i32).sum())
            .collect();
        assert_eq!(w.column_sums(), &sums[..]);
    }
}

#[test]
fn all_255_times_minus_128_does_not_saturate() {
    // vpmaddubsw would saturate 2 x 255 x -128 = -65,280 to -32,768; the AVX2 kernel widens first.
    let (m, k, n) = (5, 1000, 20);
    let a = vec![255u8; m * k];
    let b = vec![-128i8; k * n];
    let w = PackedWeights::pack(&b, k, n);
    for kernel in kernels() {
        let mut c = vec![0i32; m * n];
        gemm_u8i8(&pad_rows(&a, m, k, w.lda()), m, &w, &mut c, kernel).unwrap();
        assert!(c.iter().all(|&v| v == -255 * 128 * 1000), "{kernel:?}");
    }
}

#[test]
fn short_buffers_are_refused() {
    let w = PackedWeights::pack(&[1, 2, 3, 4, 5, 6], 3, 2);
    assert_eq!(w.lda(), 4);
    let mut c = vec![0i32; 4];
    assert!(matches!(
        gemm_u8i8(&[0u8; 7], 2, &w, &mut c, Kernel::Scalar),
        Err(GemmError::ShortA { need: 8, .. })
    ));
    assert!(matches!(
        gemm_u8i8(&[0u8; 8], 2, &w, &mut c[..3], Kernel::Scalar),
        Err(GemmError::ShortC { .. })
    ));
    gemm_u8i8(&[1, 1, 1, 0, 2, 0, 0, 0], 2, &w, &mut c, Kernel::Scalar).unwrap();
    assert_eq!(c, vec![1 + 3 + 5, 2 + 4 + 6, 2, 4]);
}
