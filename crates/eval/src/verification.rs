//! 1:1 verification as insightface computes it (`recognition/arcface_torch/eval/verification.py`),
//! so our numbers compare with published ones, plus the ROC, AUC, EER and TAR@FAR that sklearn's
//! `roc_curve` gives on cosine scores.
//!
//! insightface's protocol, exactly: squared L2 distance between L2-normalized embeddings (flip test:
//! `normalize(emb(img) + emb(mirror(img)))`), thresholds `i * 0.01` for `i` in 0..400, "same" iff
//! `dist < threshold`, ten contiguous folds (the first `n % 10` one pair longer), on each fold the
//! first threshold of best accuracy on the other nine, and the mean and population standard deviation
//! of the ten test accuracies. VAL@FAR=1e-3 uses thresholds `i * 0.001` and old scipy's "slinear"
//! interpolation of the threshold at the target FAR (see [`val_at_far`]).

use serde::Serialize;

/// Which pairs are in each of `k` contiguous folds over `n` pairs (sklearn's `KFold` without
/// shuffling: the first `n % k` folds one longer).
pub fn contiguous_folds(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    (0..k)
        .map(|f| {
            let len = n / k + usize::from(f < n % k);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// `i * step` as numpy's `arange(0, 4, step)` produces it (`i * step`, not a running sum).
fn thresholds(step: f64, count: usize) -> Vec<f64> {
    (0..count).map(|i| i as f64 * step).collect()
}

/// True/false accepts and rejects at `threshold` over the pairs `idx`.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
}

impl Counts {
    fn at(threshold: f64, dist: &[f64], same: &[bool], idx: impl Iterator<Item = usize>) -> Self {
        let mut c = Counts::default();
        for i in idx {
            match (dist[i] < threshold, same[i]) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }
    fn accuracy(&self) -> f64 {
        (self.tp + self.tn) as f64 / (self.tp + self.tn + self.fp + self.fn_).max(1) as f64
    }
    fn tpr(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// insightface's 10-fold result.
#[derive(Debug, Clone, Serialize)]
pub struct TenFold {
    /// Mean accuracy over the ten folds.
    pub accuracy_mean: f64,
    /// Population standard deviation over the folds (numpy's default).
    pub accuracy_std: f64,
    /// Each fold's accuracy, at the threshold chosen on the other nine.
    pub accuracy_per_fold: Vec<f64>,
    /// On the squared-L2 distance scale, 0..4.
    pub best_threshold_per_fold: Vec<f64>,
    /// TPR and FPR per threshold (`i * 0.01`), each the mean over the ten test folds.
    pub mean_tpr: Vec<f64>,
    /// See `mean_tpr`.
    pub mean_fpr: Vec<f64>,
}

/// The 10-fold accuracy on squared-L2 distances `dist` (pair `k` is the same person iff `same[k]`),
/// over ten contiguous folds.
pub fn ten_fold(dist: &[f64], same: &[bool]) -> TenFold {
    let n = dist.len().min(same.len());
    k_fold(dist, same, &fold_ids(&contiguous_folds(n, 10)))
}

/// Fold number of every pair from contiguous ranges.
pub fn fold_ids(folds: &[std::ops::Range<usize>]) -> Vec<usize> {
    folds
        .iter()
        .enumerate()
        .flat_map(|(f, r)| r.clone().map(move |_| f))
        .collect()
}

/// The same protocol over given folds (`fold[k]` = pair k's fold), e.g. LFW's `pairs.txt` folds.
pub fn k_fold(dist: &[f64], same: &[bool], fold: &[usize]) -> TenFold {
    let n = dist.len().min(same.len()).min(fold.len());
    let grid = thresholds(0.01, 400);
    let count = fold[..n].iter().max().map_or(0, |m| m + 1);
    let folds: Vec<Vec<usize>> = (0..count)
        .map(|f| (0..n).filter(|&i| fold[i] == f).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .collect();
    let mut accuracy = Vec::with_capacity(10);
    let mut best_thr = Vec::with_capacity(10);
    let mut tpr = vec![0.0; grid.len()];
    let mut fpr = vec![0.0; grid.len()];
    for test in &folds {
        let train = || (0..n).filter(|&i| fold[i] != fold[test[0]]);
        let mut best = (f64::MIN, 0usize);
        for (k, &t) in grid.iter().enumerate() {
            let a = Counts::at(t, dist, same, train()).accuracy();
            if a > best.0 {
                best = (a, k);
            }
        }
        for (k, &t) in grid.iter().enumerate() {
            let c = Counts::at(t, dist, same, test.iter().copied());
            tpr[k] += c.tpr() / folds.len() as f64;
            fpr[k] += c.fpr() / folds.len() as f64;
        }
        accuracy.push(Counts::at(grid[best.1], dist, same, test.iter().copied()).accuracy());
        best_thr.push(grid[best.1]);
    }
    let (accuracy_mean, accuracy_std) = mean_std(&accuracy);
    TenFold {
        accuracy_mean,
        accuracy_std,
        accuracy_per_fold: accuracy,
        best_threshold_per_fold: best_thr,
        mean_tpr: tpr,
        mean_fpr: fpr,
    }
}

/// VAL (true accept rate) at a false accept rate, insightface's way.
#[derive(Debug, Clone, Serialize)]
pub struct ValAtFar {
    /// The true accept rate, mean over the folds.
    pub val: f64,
    /// Its standard deviation over the folds.
    pub val_std: f64,
    /// The FAR actually reached on the test folds, averaged.
    pub far: f64,
    /// The squared-L2 threshold chosen on each fold's training part.
    pub threshold_per_fold: Vec<f64>,
}

/// Per fold: the FAR of every threshold `i * 0.001` on the nine training folds; if some reaches
/// `target`, the threshold interpolated at `target` as scipy's `interp1d(far, thresholds,
/// kind='slinear')` did when insightface wrote this (recent scipy rejects the repeated FAR values of
/// this step function): sort by FAR (stable), take the last point with FAR <= target and the next,
/// interpolate linearly; otherwise threshold 0. Then VAL and FAR on the test fold.
pub fn val_at_far(dist: &[f64], same: &[bool], target: f64) -> ValAtFar {
    let n = dist.len().min(same.len());
    let grid = thresholds(0.001, 4000);
    let mut vals = Vec::new();
    let mut fars = Vec::new();
    let mut thrs = Vec::new();
    for test in contiguous_folds(n, 10) {
        let train: Vec<usize> = (0..n).filter(|i| !test.contains(i)).collect();
        // FAR per threshold: count impostor distances below each threshold once, sorted.
        let mut impostor: Vec<f64> = train
            .iter()
            .filter(|&&i| !same[i])
            .map(|&i| dist[i])
            .collect();
        impostor.sort_by(f64::total_cmp);
        let far_train: Vec<f64> = grid
            .iter()
            .map(|&t| ratio(impostor.partition_point(|&d| d < t), impostor.len()))
            .collect();
        let reach = far_train.iter().cloned().fold(f64::MIN, f64::max) >= target;
        let threshold = if reach {
            old_slinear(&far_train, &grid, target)
        } else {
            0.0
        };
        let c = Counts::at(threshold, dist, same, test.clone());
        vals.push(c.tpr());
        fars.push(c.fpr());
        thrs.push(threshold);
    }
    let (val, val_std) = mean_std(&vals);
    ValAtFar {
        val,
        val_std,
        far: mean_std(&fars).0,
        threshold_per_fold: thrs,
    }
}

/// scipy's old `interp1d(x, y, kind='slinear')(x_new)` for `x` with repeated values: a linear
/// B-spline on the stably sorted points, i.e. between the last `x <= x_new` and the next.
fn old_slinear(x: &[f64], y: &[f64], x_new: f64) -> f64 {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let (xs, ys): (Vec<f64>, Vec<f64>) = order.iter().map(|&i| (x[i], y[i])).unzip();
    let last = xs.len() - 1;
    if x_new >= xs[last] {
        return ys[last];
    }
    let i = xs.partition_point(|&v| v <= x_new).saturating_sub(1);
    ys[i] + (ys[i + 1] - ys[i]) * (x_new - xs[i]) / (xs[i + 1] - xs[i])
}

/// A ROC curve on similarity scores, as sklearn's `roc_curve(drop_intermediate=True)` returns it:
/// a first point (0, 0) at an infinite threshold, then one point per distinct score from the highest
/// down, keeping only the corners of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct Roc {
    /// False positive rate at each threshold.
    pub fpr: Vec<f64>,
    /// True positive rate at each threshold.
    pub tpr: Vec<f64>,
    /// Score thresholds (predict "same" iff score >= threshold); the first is +infinity.
    pub thresholds: Vec<f64>,
}

impl Roc {
    /// The curve of `scores` (higher = more alike) against `same`.
    pub fn new(scores: &[f64], same: &[bool]) -> Self {
        let n = scores.len().min(same.len());
        let mut order: Vec<usize> = (0..n).collect();
        // sklearn: argsort(score, mergesort)[::-1], i.e. descending, later indices first on ties.
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        order.reverse();
        // Cumulative true/false positives at the last index of each distinct score.
        let (mut tps, mut fps, mut thr) = (Vec::new(), Vec::new(), Vec::new());
        let (mut tp, mut fp) = (0usize, 0usize);
        for (k, &i) in order.iter().enumerate() {
            if same[i] {
                tp += 1;
            } else {
                fp += 1;
            }
            let last_of_value = k + 1 == n || scores[order[k + 1]] != scores[i];
            if last_of_value {
                tps.push(tp as f64);
                fps.push(fp as f64);
                thr.push(scores[i]);
            }
        }
        // drop_intermediate: keep the ends and every point where the curve bends.
        let m = tps.len();
        let keep: Vec<usize> = (0..m)
            .filter(|&k| {
                k == 0
                    || k + 1 == m
                    || (fps[k + 1] - 2.0 * fps[k] + fps[k - 1]) != 0.0
                    || (tps[k + 1] - 2.0 * tps[k] + tps[k - 1]) != 0.0
            })
            .collect();
        let (total_fp, total_tp) = (
            fps.last().copied().unwrap_or(0.0),
            tps.last().copied().unwrap_or(0.0),
        );
        let mut roc = Roc {
            fpr: vec![0.0],
            tpr: vec![0.0],
            thresholds: vec![f64::INFINITY],
        };
        for k in keep {
            roc.fpr.push(if total_fp > 0.0 {
                fps[k] / total_fp
            } else {
                f64::NAN
            });
            roc.tpr.push(if total_tp > 0.0 {
                tps[k] / total_tp
            } else {
                f64::NAN
            });
            roc.thresholds.push(thr[k]);
        }
        roc
    }

    /// Area under the curve (trapezoids, as sklearn's `auc`).
    pub fn auc(&self) -> f64 {
        self.fpr
            .windows(2)
            .zip(self.tpr.windows(2))
            .map(|(f, t)| (f[1] - f[0]) * (t[1] + t[0]) / 2.0)
            .sum()
    }

    /// TPR at the ROC point whose FPR is nearest `far` (ties: the point with the larger TPR), as
    /// insightface's `eval_ijb.py` reads sklearn's curve.
    pub fn tar_at_far(&self, far: f64) -> f64 {
        let mut best = (f64::INFINITY, 0usize);
        for k in (0..self.fpr.len()).rev() {
            let d = (self.fpr[k] - far).abs();
            if d < best.0 {
                best = (d, k);
            }
        }
        self.tpr[best.1]
    }

    /// Equal error rate at the ROC point where |FNR - FPR| is smallest (first on ties), and its
    /// score threshold.
    pub fn eer(&self) -> (f64, f64) {
        let mut best = (f64::INFINITY, 0usize);
        for k in 0..self.fpr.len() {
            let d = ((1.0 - self.tpr[k]) - self.fpr[k]).abs();
            if d < best.0 {
                best = (d, k);
            }
        }
        let k = best.1;
        ((self.fpr[k] + 1.0 - self.tpr[k]) / 2.0, self.thresholds[k])
    }
}
