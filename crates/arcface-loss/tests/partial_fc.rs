//! Partial FC: sampling keeps every positive, remaps labels bijectively, equals the full head at
//! sample rate 1, and its optimiser moves only the sampled centres.

mod common;

use std::collections::{BTreeSet, HashMap};

use arcface_loss::{
    sample_classes, step_rng, ClassSample, MarginFcConfig, MarginHead, SampledSgdConfig,
};
use burn::tensor::{DType, Tensor};
use common::{matrix, rows, values, Ad, Cpu, Lcg};

fn random_labels(rng: &mut Lcg, n: usize, k: usize) -> Vec<usize> {
    (0..n)
        .map(|_| (rng.uniform() * k as f64) as usize)
        .collect()
}

#[test]
fn every_positive_is_sampled_and_labels_map_one_to_one() {
    let (k, n) = (1000, 128);
    let config = MarginFcConfig::new(k, 8).with_sample_rate(0.1).with_seed(5);
    let head = config.init::<Cpu>(&Default::default()).unwrap();
    let mut rng = Lcg(1);
    let mut negatives_drawn = vec![0usize; k];
    let steps = 400;
    for step in 0..steps {
        // Some batches repeat identities heavily, as real ones do.
        let labels = random_labels(&mut rng, n, if step % 2 == 0 { k } else { 40 });
        let sample = head.sample(&labels, step);
        let classes = sample.classes.clone().expect("sampled");
        let positives: BTreeSet<usize> = labels.iter().copied().collect();
        assert_eq!(classes.len(), config.num_sample().max(positives.len()));
        assert!(
            classes.windows(2).all(|w| w[0] < w[1]),
            "sorted and distinct"
        );
        assert!(
            positives.iter().all(|p| classes.binary_search(p).is_ok()),
            "positive dropped"
        );
        // The remapping is a bijection between the batch's labels and their columns.
        let mut column_of: HashMap<usize, usize> = HashMap::new();
        let mut label_of: HashMap<usize, usize> = HashMap::new();
        for (&label, &column) in labels.iter().zip(&sample.targets) {
            assert_eq!(classes[column], label);
            assert_eq!(*column_of.entry(label).or_insert(column), column);
            assert_eq!(*label_of.entry(column).or_insert(label), label);
        }
        if step % 2 == 1 {
            for &c in classes.iter().filter(|c| !positives.contains(c)) {
                negatives_drawn[c] += 1;
            }
        }
        // Sampling is a function of (seed, step): the same step draws the same classes.
        assert_eq!(head.sample(&labels, step), sample);
    }
    // On the odd steps (labels among classes 0..40, ~62 negatives a step) negatives are spread
    // uniformly over the other 960 classes: each drawn ~13 times, none never or far too often.
    let counts = &negatives_drawn[40..];
    let expected = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(
        min > 0 && (max as f64) < 3.0 * expected,
        "negatives drawn between {min} and {max} times, mean {expected:.1}"
    );
}

#[test]
fn sample_rate_one_is_the_full_head() {
    let (k, d) = (50, 16);
    let mut rng = Lcg(2);
    let (e, w) = (rng.matrix(12, d), rng.matrix(k, d));
    let labels = random_labels(&mut rng, 12, k);
    let config = MarginFcConfig::new(k, d).with_label_smoothing(0.1);
    let head = config.init_with(matrix::<Cpu>(&w, DType::F32)).unwrap();
    let full = head
        .forward(matrix::<Cpu>(&e, DType::F32), &labels, 0)
        .unwrap();
    assert_eq!(full.sample, ClassSample::all(&labels));

    // Partial FC's own path (sampling, gather of centres, remapped labels) with every class kept.
    let everything = sample_classes(&labels, k, k, &mut step_rng(0, 0));
    assert_eq!(everything.classes, Some((0..k).collect()));
    assert_eq!(everything.targets, labels);
    let sampled = head
        .forward_sampled(matrix::<Cpu>(&e, DType::F32), everything)
        .unwrap();
    assert_eq!(values(sampled.logits), values(full.logits.clone()));
    assert_eq!(values(sampled.loss), values(full.loss));

    // A real sample scores exactly the full head's columns it kept.
    let partial_head = config
        .clone()
        .with_sample_rate(0.3)
        .init_with(matrix::<Cpu>(&w, DType::F32));
    let partial = partial_head
        .unwrap()
        .forward(matrix::<Cpu>(&e, DType::F32), &labels, 3)
        .unwrap();
    let (full_rows, part_rows) = (rows(full.logits), rows(partial.logits));
    for (i, row) in part_rows.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let class = partial.sample.class_of(j);
            assert!(
                (v - full_rows[i][class]).abs() < 1e-4,
                "[{i}, {j}->{class}]"
            );
        }
    }
}

#[test]
fn only_sampled_centres_move() {
    let (k, d, n) = (40, 8, 6);
    let mut rng = Lcg(4);
    let (e, w) = (rng.matrix(n, d), rng.matrix(k, d));
    let labels = random_labels(&mut rng, n, k);
    let config = MarginFcConfig::new(k, d).with_sample_rate(0.25);
    let head = config.init_with(matrix::<Ad>(&w, DType::F32)).unwrap();
    let mut sgd = SampledSgdConfig::default().init().unwrap();

    let out = head
        .forward(matrix::<Ad>(&e, DType::F32), &labels, 0)
        .unwrap();
    let classes = out.sample.classes.clone().unwrap();
    let grads = out.loss.backward();
    assert!(
        head.centres.val().grad(&grads).is_none(),
        "the [K, D] parameter gets no dense gradient under Partial FC"
    );
    let row_grad = rows(out.centres.grad(&grads).unwrap());
    let head = head.step_sampled(&grads, &out.sample, &out.centres, &mut sgd, 0.1);
    let after = rows(head.centres.val());
    for c in 0..k {
        if let Ok(r) = classes.binary_search(&c) {
            // First step of PyTorch SGD (dampening 0): v = g + wd * w; w -= lr * v.
            for j in 0..d {
                let expected =
                    w[c][j] as f32 as f64 - 0.1 * (row_grad[r][j] + 5e-4 * (w[c][j] as f32 as f64));
                assert!((after[c][j] - expected).abs() < 1e-6, "class {c}");
            }
        } else {
            let before: Vec<f64> = w[c].iter().map(|&x| x as f32 as f64).collect();
            assert_eq!(after[c], before, "unsampled class {c} moved");
        }
    }
    assert!(
        head.centres.val().is_require_grad(),
        "the centres stay trainable"
    );
}

/// Reference: PyTorch's SGD update written out per element (dampening 0).
fn torch_sgd(w: &mut [f64], v: &mut [f64], g: &[f64], lr: f64, mu: f64, wd: f64, nesterov: bool) {
    for i in 0..w.len() {
        let grad = g[i] + wd * w[i];
        v[i] = mu * v[i] + grad;
        let step = if nesterov { grad + mu * v[i] } else { v[i] };
        w[i] -= lr * step;
    }
}

#[test]
fn sampled_sgd_is_pytorch_sgd_on_the_rows_it_touches() {
    for nesterov in [false, true] {
        let (k, d) = (6, 3);
        let config = SampledSgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov,
        };
        let mut sgd = config.init::<Cpu>().unwrap();
        let mut rng = Lcg(8);
        let w0 = rng.matrix(k, d);
        let mut weights = matrix::<Cpu>(&w0, DType::F64);
        let mut w_ref = w0.clone();
        let mut v_ref = vec![vec![0.0; d]; k];
        let schedule: [&[usize]; 4] = [&[0, 2], &[2, 3, 5], &[0, 1, 2, 3, 4, 5], &[5]];
        for (step, touched) in schedule.iter().enumerate() {
            let g = rng.matrix(k, d);
            let lr = 0.1 / (step + 1) as f64;
            let g_rows: Vec<Vec<f64>> = touched.iter().map(|&r| g[r].clone()).collect();
            weights = sgd.step(
                weights,
                matrix::<Cpu>(&g_rows, DType::F64),
                Some(touched),
                lr,
            );
            for &r in touched.iter() {
                torch_sgd(&mut w_ref[r], &mut v_ref[r], &g[r], lr, 0.9, 5e-4, nesterov);
            }
            for (ours, theirs) in rows(weights.clone())
                .iter()
                .flatten()
                .zip(w_ref.iter().flatten())
            {
                assert!(
                    (ours - theirs).abs() < 1e-12,
                    "nesterov {nesterov} step {step}"
                );
            }
        }
    }
}

#[test]
fn half_precision_embeddings_are_computed_in_f32() {
    let (k, d) = (20, 16);
    let mut rng = Lcg(6);
    let (e, w) = (rng.matrix(8, d), rng.matrix(k, d));
    let labels = random_labels(&mut rng, 8, k);
    let config = MarginFcConfig::new(k, d);
    for half in [DType::F16, DType::BF16] {
        let head = config.init_with(matrix::<Ad>(&w, DType::F32)).unwrap();
        let e_half = matrix::<Ad>(&e, half).require_grad();
        // The same values, already rounded to half, given as f32.
        let e_rounded = values(e_half.clone().inner().cast(DType::F32));
        let out = head.forward(e_half.clone(), &labels, 0).unwrap();
        assert_eq!(out.logits.dtype(), DType::F32, "{half:?}");
        let reference = config
            .init_with(matrix::<Cpu>(&w, DType::F32))
            .unwrap()
            .forward(
                Tensor::<Cpu, 1>::from_floats(
                    e_rounded
                        .iter()
                        .map(|&x| x as f32)
                        .collect::<Vec<_>>()
                        .as_slice(),
                    &Default::default(),
                )
                .reshape([8, d]),
                &labels,
                0,
            )
            .unwrap();
        assert_eq!(
            values(out.logits.clone().inner()),
            values(reference.logits),
            "{half:?}"
        );
        let grads = out.loss.backward();
        let grad = e_half.grad(&grads).unwrap();
        assert_eq!(
            grad.dtype(),
            half,
            "gradient comes back in the input's precision"
        );
        assert!(values(grad).iter().all(|g| g.is_finite()));
    }
}

/// End to end on a learnable toy problem: fixed embeddings around 50 class prototypes, a Partial
/// FC head (rate 0.2) from normal(0, 0.01) centres, trained by its row-sparse SGD.
#[test]
fn partial_fc_head_learns_the_classes() {
    let (k, d, n) = (50, 16, 100);
    let mut rng = Lcg(12);
    let prototypes = rng.matrix(k, d);
    let labels: Vec<usize> = (0..n).map(|i| i % k).collect();
    let embeddings: Vec<Vec<f64>> = labels
        .iter()
        .map(|&y| {
            prototypes[y]
                .iter()
                .map(|x| x + 0.3 * rng.normal())
                .collect()
        })
        .collect();
    let config = MarginFcConfig::new(k, d)
        .with_margin(arcface_loss::CosFace {
            scale: 16.0,
            margin: 0.2,
        })
        .with_sample_rate(0.2);
    let mut head = config.init::<Ad>(&Default::default()).unwrap();
    let mut sgd = SampledSgdConfig::default().init().unwrap();
    let full = |head: &arcface_loss::MarginFc<Ad>| {
        let eval = config.clone().with_sample_rate(1.0);
        let h = eval.init_with(head.centres.val().inner()).unwrap();
        let out = h
            .forward(matrix::<Cpu>(&embeddings, DType::F32), &labels, 0)
            .unwrap();
        values(out.loss)[0]
    };
    let before = full(&head);
    for step in 0..150 {
        let batch: Vec<usize> = (0..20).map(|i| (step * 20 + i) % n).collect();
        let e: Vec<Vec<f64>> = batch.iter().map(|&i| embeddings[i].clone()).collect();
        let y: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
        let out = head
            .forward(matrix::<Ad>(&e, DType::F32), &y, step as u64)
            .unwrap();
        let grads = out.loss.backward();
        head = head.step_sampled(&grads, &out.sample, &out.centres, &mut sgd, 0.5);
    }
    let after = full(&head);
    assert!(
        after < 0.3 * before,
        "full-head loss {before:.3} -> {after:.3}"
    );
}

#[test]
fn centres_start_as_normal_with_std_0_01() {
    let head = MarginFcConfig::new(2000, 64)
        .init::<Cpu>(&Default::default())
        .unwrap();
    let v = values(head.centres.val());
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    // 128k draws: the mean's standard error is 3e-5, the std's 2e-5.
    assert!(mean.abs() < 2e-4, "mean {mean}");
    assert!((std - 0.01).abs() < 2e-4, "std {std}");
    let beyond_4_sigma = v.iter().filter(|x| x.abs() > 0.04).count();
    assert!(
        beyond_4_sigma < 20,
        "{beyond_4_sigma} values beyond 4 sigma: not normal"
    );
}
