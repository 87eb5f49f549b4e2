//! 10-fold verification accuracy as insightface computes it, on similarity scores: 10 contiguous
//! folds, the best-accuracy threshold on nine (first one on ties) applied to the tenth, mean
//! accuracy. (The `eval` crate will own the full protocol; this is what training needs.)

/// Mean 10-fold accuracy; `scores` are similarities (higher = same person).
pub fn ten_fold_accuracy(scores: &[f64], issame: &[bool]) -> f64 {
    let n = scores.len().min(issame.len());
    if n < 10 {
        return f64::NAN;
    }
    let mut thresholds: Vec<f64> = scores[..n].to_vec();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    // Midpoints between consecutive scores, and one below all.
    let mut candidates = vec![thresholds[0] - 1.0];
    candidates.extend(thresholds.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    let folds = 10;
    let mut total = 0.0;
    for f in 0..folds {
        // Contiguous folds; the first n % 10 are one longer, as sklearn's KFold makes them.
        let bounds = |k: usize| k * (n / folds) + k.min(n % folds);
        let test = bounds(f)..bounds(f + 1);
        let accuracy = |t: f64, idx: &mut dyn Iterator<Item = usize>| {
            let (mut right, mut count) = (0usize, 0usize);
            for i in idx {
                right += ((scores[i] > t) == issame[i]) as usize;
                count += 1;
            }
            right as f64 / count.max(1) as f64
        };
        let mut best = (f64::MIN, candidates[0]);
        for &t in &candidates {
            let a = accuracy(t, &mut (0..n).filter(|i| !test.contains(i)));
            if a > best.0 {
                best = (a, t);
            }
        }
        total += accuracy(best.1, &mut test.clone());
    }
    total / folds as f64
}
