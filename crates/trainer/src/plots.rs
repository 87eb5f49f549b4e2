//! The run's curves as PNG, drawn from `metrics.jsonl` at the end: loss, learning rate, and
//! verification accuracy (when the run verified).

use std::path::{Path, PathBuf};

use arcface_plot::{Chart, Series};

use crate::error::TrainError;
use crate::metrics::{read_metrics, StepInfo};

/// Writes `loss.png`, `lr.png` and (with verification) `accuracy.png` into `out`.
pub fn write(metrics: &Path, out: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let steps = read_metrics(metrics)?;
    let series = |f: &dyn Fn(&StepInfo) -> Option<f64>| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter_map(|s| Some((s.step as f64, f(s)?)))
            .collect()
    };
    let mut charts = vec![(
        "loss.png",
        Chart::new("Training loss", "step", "loss").with_series(Series::new(
            "train",
            series(&|s| Some(s.loss)),
            0,
        )),
    )];
    if let Some(c) = charts.first_mut() {
        let validation = series(&|s| s.validation_loss);
        if !validation.is_empty() {
            c.1.series.push(Series::new("validation", validation, 1));
        }
    }
    let mut lr = Chart::new("Learning rate", "step", "lr").with_series(Series::new(
        "",
        series(&|s| Some(s.lr)),
        2,
    ));
    lr.log_y = true;
    charts.push(("lr.png", lr));
    let accuracy = series(&|s| s.accuracy.map(|a| 100.0 * a));
    if !accuracy.is_empty() {
        charts.push((
            "accuracy.png",
            Chart::new("Verification accuracy (10-fold)", "step", "accuracy %")
                .with_series(Series::new("", accuracy, 0)),
        ));
    }
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = out.join(name);
        match chart.save_png(&path) {
            Ok(()) => written.push(path),
            // A run too short to have a curve has no chart; that is not an error.
            Err(arcface_plot::PlotError::Empty) => {}
            Err(e) => return Err(TrainError::Other(e.to_string())),
        }
    }
    Ok(written)
}
