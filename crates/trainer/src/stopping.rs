//! Early stopping: the watched metric, its best value and the evaluations since it improved.

use crate::settings::{EarlyStopping, StopMetric};

/// What one evaluation measured, as early stopping and the metrics see it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Evaluation {
    pub accuracy: Option<f64>,
    pub collapse_share: Option<f64>,
    pub validation_loss: Option<f64>,
}

/// What an evaluation means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The watched metric reached a new best (this checkpoint becomes the best one).
    pub improved: bool,
    /// `patience` evaluations in a row without improvement.
    pub stop: bool,
}

/// Updates `best` and `since_best` (kept in the run's state so a resume continues them) with
/// one evaluation; higher is better for the watched value (the validation loss is negated).
pub(crate) fn observe(
    settings: &EarlyStopping,
    evaluation: &Evaluation,
    best: &mut Option<f64>,
    since_best: &mut usize,
) -> Verdict {
    let watched = match settings.metric {
        StopMetric::Off => None,
        StopMetric::Accuracy => evaluation.accuracy,
        StopMetric::ValidationLoss => evaluation.validation_loss.map(|l| -l),
    };
    let Some(value) = watched else {
        return Verdict {
            improved: false,
            stop: false,
        };
    };
    if best.is_none_or(|b| value > b + settings.min_delta) {
        (*best, *since_best) = (Some(value), 0);
        return Verdict {
            improved: true,
            stop: false,
        };
    }
    *since_best += 1;
    Verdict {
        improved: false,
        stop: *since_best >= settings.patience,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_evaluations_without_improvement() {
        let settings = EarlyStopping {
            metric: StopMetric::Accuracy,
            patience: 2,
            min_delta: 0.01,
        };
        let (mut best, mut since) = (None, 0);
        let mut run = |a: f64| {
            let e = Evaluation {
                accuracy: Some(a),
                ..Default::default()
            };
            observe(&settings, &e, &mut best, &mut since)
        };
        assert!(run(0.5).improved);
        // +0.005 is under min_delta: not an improvement.
        assert_eq!(
            run(0.505),
            Verdict {
                improved: false,
                stop: false
            }
        );
        assert!(run(0.6).improved);
        assert!(!run(0.6).stop);
        assert!(run(0.59).stop);
    }

    #[test]
    fn the_validation_loss_is_watched_lower_is_better_and_off_never_stops() {
        let mut settings = EarlyStopping {
            metric: StopMetric::ValidationLoss,
            patience: 1,
            min_delta: 0.0,
        };
        let loss = |l: f64| Evaluation {
            validation_loss: Some(l),
            ..Default::default()
        };
        let (mut best, mut since) = (None, 0);
        assert!(observe(&settings, &loss(2.0), &mut best, &mut since).improved);
        assert!(observe(&settings, &loss(1.0), &mut best, &mut since).improved);
        assert!(observe(&settings, &loss(1.5), &mut best, &mut since).stop);
        settings.metric = StopMetric::Off;
        let (mut best, mut since) = (None, 0);
        for _ in 0..5 {
            let v = observe(&settings, &loss(3.0), &mut best, &mut since);
            assert!(!v.improved && !v.stop);
        }
    }
}
