//! A verification report from embeddings: every number, a terminal table, JSON, and plots.

use std::path::{Path, PathBuf};

use arcface_plot::{Chart, Series};
use serde::Serialize;

use crate::verification::{k_fold, ten_fold, val_at_far, Roc, TenFold, ValAtFar};
use crate::EvalError;

/// The FARs TAR is reported at.
pub const FARS: [f64; 6] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// Everything 1:1 verification measures on one set of pairs.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationReport {
    /// Pairs scored.
    pub pairs: usize,
    /// Pairs of one person.
    pub genuine: usize,
    /// Pairs of two people.
    pub impostor: usize,
    /// insightface's 10-fold accuracy on squared L2 distances.
    pub ten_fold: TenFold,
    /// insightface's VAL@FAR=1e-3.
    pub val_at_far_1e3: ValAtFar,
    /// On cosine scores, as sklearn's roc_curve reads.
    pub auc: f64,
    /// Equal error rate: where FAR equals FRR.
    pub eer: f64,
    /// The cosine threshold at the equal error rate.
    pub eer_threshold: f64,
    /// (FAR, TAR) at 1e-1 .. 1e-6; a FAR below 1 / impostors cannot be resolved and reads the
    /// nearest ROC point.
    pub tar_at_far: Vec<(f64, f64)>,
    /// Cosine similarity of every pair.
    pub scores: Vec<f64>,
    /// Whether each pair is one person.
    pub same: Vec<bool>,
    /// The ROC curve (for plots; not serialized).
    #[serde(skip)]
    pub roc: Roc,
}

/// Scores pairs `(2k, 2k + 1)` of L2-normalized embeddings; `fold` gives each pair's fold when
/// the set defines them (LFW), else ten contiguous folds.
pub fn verify_pairs(
    embeddings: &[Vec<f32>],
    same: &[bool],
    fold: Option<&[usize]>,
) -> Result<VerificationReport, EvalError> {
    if embeddings.len() != 2 * same.len() {
        return Err(EvalError::Input(format!(
            "{} embeddings for {} pairs: need two per pair",
            embeddings.len(),
            same.len()
        )));
    }
    if same.len() < 10 {
        return Err(EvalError::Input(format!(
            "{} pairs: 10-fold needs at least 10",
            same.len()
        )));
    }
    let (mut dist, mut cos) = (
        Vec::with_capacity(same.len()),
        Vec::with_capacity(same.len()),
    );
    for pair in embeddings.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let d: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let c: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        if !(d.is_finite() && c.is_finite()) {
            return Err(EvalError::Input("non-finite embedding".into()));
        }
        dist.push(d);
        cos.push(c);
    }
    let mut report = report_from_scores(&dist, &cos, same);
    if let Some(fold) = fold {
        if fold.len() != same.len() {
            return Err(EvalError::Input(format!(
                "{} fold ids for {} pairs",
                fold.len(),
                same.len()
            )));
        }
        report.ten_fold = k_fold(&dist, same, fold);
    }
    Ok(report)
}

/// The report from precomputed squared-L2 distances and cosines (for normalized embeddings
/// `dist = 2 - 2 cos`; both are taken so each metric reads exactly what its reference reads).
pub fn report_from_scores(dist: &[f64], cos: &[f64], same: &[bool]) -> VerificationReport {
    let roc = Roc::new(cos, same);
    let (eer, eer_threshold) = roc.eer();
    let genuine = same.iter().filter(|&&s| s).count();
    VerificationReport {
        pairs: same.len(),
        genuine,
        impostor: same.len() - genuine,
        ten_fold: ten_fold(dist, same),
        val_at_far_1e3: val_at_far(dist, same, 1e-3),
        auc: roc.auc(),
        eer,
        eer_threshold,
        tar_at_far: FARS.iter().map(|&f| (f, roc.tar_at_far(f))).collect(),
        scores: cos.to_vec(),
        same: same.to_vec(),
        roc,
    }
}

impl VerificationReport {
    /// The threshold (cosine) insightface's folds chose on average: `1 - dist / 2`.
    pub fn best_cosine_threshold(&self) -> f64 {
        let t = &self.ten_fold.best_threshold_per_fold;
        1.0 - t.iter().sum::<f64>() / t.len().max(1) as f64 / 2.0
    }

    /// A table for the terminal.
    pub fn table(&self, name: &str) -> String {
        let mut s = format!(
            "{name}: {} pairs ({} genuine, {} impostor)\n",
            self.pairs, self.genuine, self.impostor
        );
        s += &format!(
            "  accuracy (10-fold)   {:.2}% +- {:.2}\n",
            100.0 * self.ten_fold.accuracy_mean,
            100.0 * self.ten_fold.accuracy_std
        );
        s += &format!(
            "  best threshold       cosine {:.3} (squared L2 {:.3})\n",
            self.best_cosine_threshold(),
            2.0 * (1.0 - self.best_cosine_threshold())
        );
        s += &format!(
            "  VAL@FAR=1e-3         {:.2}% +- {:.2} (FAR {:.4})\n",
            100.0 * self.val_at_far_1e3.val,
            100.0 * self.val_at_far_1e3.val_std,
            self.val_at_far_1e3.far
        );
        s += &format!("  AUC                  {:.5}\n", self.auc);
        s += &format!(
            "  EER                  {:.2}% (cosine {:.3})\n",
            100.0 * self.eer,
            self.eer_threshold
        );
        for (far, tar) in &self.tar_at_far {
            let note = if *far * (self.impostor as f64) < 1.0 {
                " (fewer impostors than 1/FAR: nearest ROC point)"
            } else {
                ""
            };
            s += &format!("  TAR@FAR={far:<8.0e}    {:.2}%{note}\n", 100.0 * tar);
        }
        s
    }

    /// `roc.png` (TAR against FAR on a log axis) and `scores.png` (genuine and impostor score
    /// histograms) in `dir`.
    pub fn plots(&self, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EvalError::Input(format!("{}: {e}", dir.display())))?;
        let points: Vec<(f64, f64)> = self
            .roc
            .fpr
            .iter()
            .zip(&self.roc.tpr)
            .filter(|(f, _)| **f > 0.0)
            .map(|(f, t)| (*f, 100.0 * t))
            .collect();
        let mut roc = Chart::new("ROC", "false accept rate", "true accept rate %")
            .with_series(Series::new(format!("AUC {:.4}", self.auc), points, 0));
        roc.log_x = true;
        roc.legend_bottom = true;
        let histogram = |genuine: bool| -> Vec<(f64, f64)> {
            let bins = 50;
            let mut counts = vec![0usize; bins];
            for (s, _) in self
                .scores
                .iter()
                .zip(&self.same)
                .filter(|(_, g)| **g == genuine)
            {
                let b = (((s + 1.0) / 2.0) * bins as f64)
                    .floor()
                    .clamp(0.0, bins as f64 - 1.0);
                counts[b as usize] += 1;
            }
            let total = counts.iter().sum::<usize>().max(1) as f64;
            // Step outline: each bin's left and right edge at its height.
            counts
                .iter()
                .enumerate()
                .flat_map(|(k, &c)| {
                    let (lo, hi) = (
                        -1.0 + 2.0 * k as f64 / bins as f64,
                        -1.0 + 2.0 * (k + 1) as f64 / bins as f64,
                    );
                    let h = 100.0 * c as f64 / total;
                    [(lo, h), (hi, h)]
                })
                .collect()
        };
        let scores = Chart::new("Pair scores", "cosine similarity", "% of pairs")
            .with_series(Series::new("genuine", histogram(true), 2))
            .with_series(Series::new("impostor", histogram(false), 1));
        let mut written = Vec::new();
        for (name, chart) in [("roc.png", roc), ("scores.png", scores)] {
            let path = dir.join(name);
            chart.save_png(&path)?;
            written.push(path);
        }
        Ok(written)
    }
}
