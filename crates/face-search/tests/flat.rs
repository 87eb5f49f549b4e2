//! Exact search: kernels against the scalar code, rankings against an f64 brute force, the
//! compact formats' recall against f32, batches against single queries, add/remove, bad input.

use face_search::kernels::{
    dot_f16, dot_f32, dot_i8, dot_i8_quad, dot_u4, dot_u4_quad, quantize, quantize_u4, Query,
    U4_GROUP,
};
use face_search::{FlatIndex, Hit, Kernels, Precision, SearchError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// A probe of `v`: `v` plus noise, renormalised (cosine ~0.8, like a face photo against its
/// enrolled template).
fn probe(rng: &mut StdRng, v: &[f32]) -> Vec<f32> {
    let noise = unit(rng, v.len());
    let p: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.75 * b).collect();
    let n = p.iter().map(|x| x * x).sum::<f32>().sqrt();
    p.iter().map(|x| x / n).collect()
}

fn kernels() -> Vec<Kernels> {
    [Kernels::Scalar, Kernels::Avx2, Kernels::Avx512Vnni]
        .into_iter()
        .filter(|k| k.available())
        .collect()
}

/// Value `i` of a row of 4-bit codes, as the layout says: in each group of 128 values, byte `b`
/// holds value `b` (low nibble) and value `64 + b` (high nibble); codes carry an offset of 8.
fn decode_u4(codes: &[u8], i: usize) -> i32 {
    let (group, at) = (i / U4_GROUP, i % U4_GROUP);
    let byte = codes[group * U4_GROUP / 2 + at % 64];
    let code = if at < 64 { byte & 0x0F } else { byte >> 4 };
    code as i32 - 8
}

#[test]
fn four_bit_codes_round_trip_and_every_kernel_sums_them_exactly() {
    let mut rng = StdRng::seed_from_u64(11);
    for dim in [1usize, 63, 100, 128, 130, 256, 512] {
        let v = unit(&mut rng, dim);
        let (codes, scale) = quantize_u4(&v);
        assert_eq!(
            codes.len(),
            dim.div_ceil(U4_GROUP) * U4_GROUP / 2,
            "dim {dim}"
        );
        for (i, x) in v.iter().enumerate() {
            let back = decode_u4(&codes, i) as f32 * scale;
            assert!(
                (back - x).abs() <= scale / 2.0 + 1e-6,
                "dim {dim} value {i}"
            );
        }
        // Padding decodes to zero.
        for i in dim..codes.len() * 2 {
            assert_eq!(decode_u4(&codes, i), 0, "dim {dim} padding {i}");
        }
        let queries: Vec<Query> = (0..4).map(|_| Query::new(&unit(&mut rng, dim))).collect();
        let expected: Vec<i32> = queries
            .iter()
            .map(|q| {
                (0..dim)
                    .map(|i| q.i8[i] as i32 * decode_u4(&codes, i))
                    .sum()
            })
            .collect();
        for k in kernels() {
            for (q, e) in queries.iter().zip(&expected) {
                assert_eq!(dot_u4(k, q, &codes), *e, "{k:?} dim {dim}");
                let rows = [codes.as_slice(); 4];
                assert_eq!(dot_u4_quad(k, q, rows), [*e; 4], "{k:?} dim {dim}");
            }
        }
    }
}

#[test]
fn simd_kernels_match_the_scalar_code_on_odd_lengths() {
    let mut rng = StdRng::seed_from_u64(1);
    for dim in [1usize, 7, 31, 32, 33, 63, 64, 65, 127, 130, 512, 1000] {
        let q = unit(&mut rng, dim);
        let r = unit(&mut rng, dim);
        let r16: Vec<half::f16> = r.iter().map(|&x| half::f16::from_f32(x)).collect();
        let pad = dim.div_ceil(64) * 64;
        let (mut qi, _) = quantize(&q);
        let (mut ri, _) = quantize(&r);
        ri.resize(pad, 0);
        // The extremes, where a saturating instruction would go wrong.
        qi[0] = -127;
        ri[0] = -127;
        let exact: i32 = qi.iter().zip(&ri).map(|(&a, &b)| a as i32 * b as i32).sum();
        let qi = Query::from_quantized(qi, 1.0);
        let f32_ref: f64 = q.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum();
        for k in kernels() {
            assert_eq!(dot_i8(k, &qi, &ri), exact, "{k:?} dim {dim}");
            let f = dot_f32(k, &q, &r) as f64;
            assert!(
                (f - f32_ref).abs() < 1e-5,
                "{k:?} f32 dim {dim}: {f} vs {f32_ref}"
            );
            let h = dot_f16(k, &q, &r16) as f64;
            let h_ref: f64 = q
                .iter()
                .zip(&r16)
                .map(|(a, b)| *a as f64 * b.to_f64())
                .sum();
            assert!(
                (h - h_ref).abs() < 1e-5,
                "{k:?} f16 dim {dim}: {h} vs {h_ref}"
            );
        }
    }
}

#[test]
fn four_queries_at_once_equal_four_single_products() {
    let mut rng = StdRng::seed_from_u64(11);
    for dim in [1usize, 63, 64, 65, 200, 512] {
        let queries: Vec<Query> = (0..4).map(|_| Query::new(&unit(&mut rng, dim))).collect();
        let (mut row, _) = quantize(&unit(&mut rng, dim));
        row.resize(dim.div_ceil(64) * 64, 0);
        row[0] = -127;
        for k in kernels() {
            let quad = dot_i8_quad(
                k,
                [&queries[0], &queries[1], &queries[2], &queries[3]],
                &row,
            );
            let singles: Vec<i32> = queries.iter().map(|q| dot_i8(k, q, &row)).collect();
            assert_eq!(quad.to_vec(), singles, "{k:?} dim {dim}");
            let scalar: Vec<i32> = queries
                .iter()
                .map(|q| dot_i8(Kernels::Scalar, q, &row))
                .collect();
            assert_eq!(quad.to_vec(), scalar, "{k:?} dim {dim}");
        }
    }
}

#[test]
fn f32_search_ranks_like_a_float64_brute_force() {
    let mut rng = StdRng::seed_from_u64(2);
    let (dim, n, k) = (96, 10_000, 10);
    let rows: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, dim)).collect();
    let mut index = FlatIndex::new(dim, Precision::F32);
    for (i, r) in rows.iter().enumerate() {
        // Ids not equal to positions, to catch mix-ups.
        index.add(1000 + 3 * i as i64, r).unwrap();
    }
    for _ in 0..20 {
        let q = unit(&mut rng, dim);
        let mut reference: Vec<(f64, i64)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s: f64 = q.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum();
                (s, 1000 + 3 * i as i64)
            })
            .collect();
        reference.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hits = index.search(&q, k).unwrap();
        assert_eq!(hits.len(), k);
        for (hit, (score, id)) in hits.iter().zip(&reference) {
            assert!((hit.score as f64 - score).abs() < 1e-5);
            // Equal ids unless two scores tie within rounding.
            if hit.id != *id {
                let theirs = reference.iter().find(|r| r.1 == hit.id).unwrap().0;
                assert!((theirs - score).abs() < 1e-6, "rank mix-up {hit:?} vs {id}");
            }
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn compact_formats_keep_recall_against_f32() {
    let mut rng = StdRng::seed_from_u64(3);
    let (dim, n) = (128, 20_000);
    let rows: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, dim)).collect();
    let build = |p| {
        let mut index = FlatIndex::new(dim, p);
        for (i, r) in rows.iter().enumerate() {
            index.add(i as i64, r).unwrap();
        }
        index
    };
    let exact = build(Precision::F32);
    let probes: Vec<Vec<f32>> = (0..200)
        .map(|i| probe(&mut rng, &rows[i * 97 % n]))
        .collect();
    let truth = exact.search_batch(&probes, 10).unwrap();
    for precision in [Precision::F16, Precision::Int8, Precision::Sq4] {
        let index = build(precision);
        assert_eq!(index.len(), n);
        let found = index.search_batch(&probes, 10).unwrap();
        let at1 = found
            .iter()
            .zip(&truth)
            .filter(|(f, t)| f[0].id == t[0].id)
            .count() as f64
            / probes.len() as f64;
        let at10: f64 = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count())
            .sum::<usize>() as f64
            / (10 * probes.len()) as f64;
        assert!(at1 >= 0.99, "{precision:?} recall@1 {at1}");
        assert!(at10 >= 0.9, "{precision:?} recall@10 {at10}");
        let bytes_per_row = index.bytes() as f64 / n as f64;
        let expected = match precision {
            Precision::F16 => 2.0 * dim as f64,
            // Codes (half a byte a value), a scale, and the f16 rows of the rerank.
            Precision::Sq4 => dim as f64 / 2.0 + 4.0 + 2.0 * dim as f64,
            // The values, an f32 scale and an i32 value sum (for batched search's tiles).
            _ => dim as f64 + 8.0,
        };
        assert_eq!(bytes_per_row, expected);
    }
}

#[test]
fn batches_equal_single_queries_and_every_kernel_agrees() {
    let mut rng = StdRng::seed_from_u64(4);
    // 9 queries and 9,003 rows: int8 batches run four-by-four tiles, then the rows and
    // queries left over (one of each kind per 4,096-row task).
    let (dim, n) = (100, 9_003);
    let rows: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, dim)).collect();
    let queries: Vec<Vec<f32>> = (0..9).map(|_| unit(&mut rng, dim)).collect();
    for precision in [
        Precision::F32,
        Precision::F16,
        Precision::Int8,
        Precision::Sq4,
    ] {
        let mut results: Vec<Vec<Vec<Hit>>> = Vec::new();
        for k in kernels() {
            let mut index = FlatIndex::new(dim, precision).with_kernels(k).unwrap();
            for (i, r) in rows.iter().enumerate() {
                index.add(i as i64, r).unwrap();
            }
            let batch = index.search_batch(&queries, 5).unwrap();
            for (q, b) in queries.iter().zip(&batch) {
                let single = index.search(q, 5).unwrap();
                // int8 sums are integers; sq4's batch and single query take the same path.
                if matches!(precision, Precision::Int8 | Precision::Sq4) {
                    assert_eq!(&single, b);
                } else {
                    // A matrix product sums in another order than one dot product: same hits,
                    // scores equal up to rounding.
                    assert_eq!(single.len(), b.len());
                    for (s, h) in single.iter().zip(b) {
                        assert_eq!(s.id, h.id, "{precision:?} {k:?}");
                        assert!((s.score - h.score).abs() < 1e-5, "{precision:?} {k:?}");
                    }
                }
            }
            results.push(batch);
        }
        for r in &results[1..] {
            for (a, b) in r.iter().zip(&results[0]) {
                let ids = |h: &Vec<Hit>| h.iter().map(|h| h.id).collect::<Vec<_>>();
                if precision == Precision::Int8 {
                    // Integer sums: bit-identical across kernels.
                    assert_eq!(a, b);
                } else {
                    assert_eq!(ids(a), ids(b), "{precision:?}");
                }
            }
        }
    }
}

#[test]
fn removal_moves_the_last_row_and_keeps_ids_straight() {
    let mut rng = StdRng::seed_from_u64(5);
    let dim = 16;
    for precision in [
        Precision::F32,
        Precision::F16,
        Precision::Int8,
        Precision::Sq4,
    ] {
        let rows: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut rng, dim)).collect();
        let mut index = FlatIndex::new(dim, precision);
        for (i, r) in rows.iter().enumerate() {
            index.add(i as i64, r).unwrap();
        }
        assert!(index.remove(3));
        assert!(index.remove(49));
        assert!(!index.remove(3));
        assert_eq!(index.len(), 48);
        for (i, r) in rows.iter().enumerate() {
            let top = index.search(r, 1).unwrap();
            if i == 3 || i == 49 {
                assert_ne!(top[0].id, i as i64);
            } else {
                assert_eq!(top[0].id, i as i64, "{precision:?} row {i}");
                assert!(top[0].score > 0.99);
            }
        }
        // More than there is: all of it.
        assert_eq!(index.search(&rows[0], 100).unwrap().len(), 48);
        assert!(index.search(&rows[0], 0).unwrap().is_empty());
    }
}

#[test]
fn bad_embeddings_are_refused() {
    let mut index = FlatIndex::new(4, Precision::F32);
    assert!(matches!(
        index.add(1, &[1.0, 0.0, 0.0]),
        Err(SearchError::Dimension {
            got: 3,
            expected: 4
        })
    ));
    assert!(matches!(
        index.add(1, &[0.0; 4]),
        Err(SearchError::BadEmbedding(_))
    ));
    assert!(matches!(
        index.add(1, &[f32::NAN, 0.0, 0.0, 1.0]),
        Err(SearchError::BadEmbedding(_))
    ));
    index.add(1, &[1.0, 0.0, 0.0, 0.0]).unwrap();
    assert!(matches!(
        index.add(1, &[0.0, 1.0, 0.0, 0.0]),
        Err(SearchError::DuplicateId(1))
    ));
    assert!(matches!(
        index.search(&[1.0, 2.0], 3),
        Err(SearchError::Dimension { .. })
    ));
    assert!(matches!(
        index.search(&[f32::INFINITY, 0.0, 0.0, 0.0], 3),
        Err(SearchError::BadEmbedding(_))
    ));
    assert!(FlatIndex::new(4, Precision::F32)
        .search(&[1.0, 0.0, 0.0, 0.0], 3)
        .unwrap()
        .is_empty());
}
