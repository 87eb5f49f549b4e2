//! Verification metrics against the Python reference on committed score arrays:
//! datasets/fixtures/eval/verification.json, written by tools/make_eval_fixtures.py (insightface's
//! verification.py procedure with numpy, scipy's old slinear rule, scikit-learn's roc_curve/auc; the
//! versions are in the file's `made_by`).

use eval::report::report_from_scores;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../datasets/fixtures/eval/verification.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("committed fixture")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::INFINITY))
        .collect()
}

fn close(a: f64, b: f64, what: &str, case: &str) {
    assert!(
        (a - b).abs() <= 1e-12 * b.abs().max(1.0),
        "{case} {what}: ours {a} reference {b}"
    );
}

#[test]
fn every_metric_equals_the_python_reference() {
    let fx = fixture();
    assert!(fx["made_by"].as_str().unwrap().contains("scikit-learn"));
    let cases = fx["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 5);
    for (name, c) in cases {
        let dist = floats(&c["dist"]);
        let cos = floats(&c["cos"]);
        let same: Vec<bool> = c["same"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let r = report_from_scores(&dist, &cos, &same);
        close(
            r.ten_fold.accuracy_mean,
            c["accuracy_mean"].as_f64().unwrap(),
            "accuracy",
            name,
        );
        close(
            r.ten_fold.accuracy_std,
            c["accuracy_std"].as_f64().unwrap(),
            "accuracy std",
            name,
        );
        for (k, (a, b)) in r
            .ten_fold
            .accuracy_per_fold
            .iter()
            .zip(floats(&c["accuracy_per_fold"]))
            .enumerate()
        {
            close(*a, b, &format!("fold {k} accuracy"), name);
        }
        for (a, b) in r
            .ten_fold
            .best_threshold_per_fold
            .iter()
            .zip(floats(&c["best_threshold_per_fold"]))
        {
            close(*a, b, "best threshold", name);
        }
        for (a, b) in r.ten_fold.mean_tpr.iter().zip(floats(&c["mean_tpr"])) {
            close(*a, b, "mean tpr", name);
        }
        for (a, b) in r.ten_fold.mean_fpr.iter().zip(floats(&c["mean_fpr"])) {
            close(*a, b, "mean fpr", name);
        }
        close(
            r.val_at_far_1e3.val,
            c["val"].as_f64().unwrap(),
            "VAL@FAR",
            name,
        );
        close(
            r.val_at_far_1e3.val_std,
            c["val_std"].as_f64().unwrap(),
            "VAL std",
            name,
        );
        close(
            r.val_at_far_1e3.far,
            c["far"].as_f64().unwrap(),
            "FAR",
            name,
        );
        for (a, b) in r
            .val_at_far_1e3
            .threshold_per_fold
            .iter()
            .zip(floats(&c["val_threshold_per_fold"]))
        {
            assert!((a - b).abs() < 1e-9, "{name} VAL threshold: {a} vs {b}");
        }
        // The ROC curve point for point, then what is read off it.
        assert_eq!(
            r.roc.fpr.len(),
            c["roc_fpr"].as_array().unwrap().len(),
            "{name} ROC points"
        );
        for (a, b) in r.roc.fpr.iter().zip(floats(&c["roc_fpr"])) {
            close(*a, b, "roc fpr", name);
        }
        for (a, b) in r.roc.tpr.iter().zip(floats(&c["roc_tpr"])) {
            close(*a, b, "roc tpr", name);
        }
        for (a, b) in r.roc.thresholds.iter().zip(floats(&c["roc_thresholds"])) {
            assert!(a == &b, "{name} roc threshold {a} vs {b}");
        }
        close(r.auc, c["auc"].as_f64().unwrap(), "AUC", name);
        close(r.eer, c["eer"].as_f64().unwrap(), "EER", name);
        close(
            r.eer_threshold,
            c["eer_threshold"].as_f64().unwrap(),
            "EER threshold",
            name,
        );
        for (far, tar) in &r.tar_at_far {
            let expected = c["tar_at_far"][format!("{far:.0e}").replace("e-", "e-0")]
                .as_f64()
                .unwrap();
            close(*tar, expected, &format!("TAR@FAR {far:e}"), name);
        }
    }
}

#[test]
fn given_folds_are_the_folds_used() {
    // LFW's pairs.txt defines its folds. With folds interleaved (pair k in fold k % 10), the result
    // must equal contiguous folds over the pairs regrouped fold by fold, and differ from treating the
    // file order as contiguous folds.
    let fx = fixture();
    let c = &fx["cases"]["uneven_1234"];
    let dist = floats(&c["dist"])[..1000].to_vec();
    let same: Vec<bool> = c["same"].as_array().unwrap()[..1000]
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    let fold: Vec<usize> = (0..1000).map(|k| k % 10).collect();
    let given = eval::k_fold(&dist, &same, &fold);
    let order: Vec<usize> = (0..10)
        .flat_map(|f| (0..1000).filter(move |k| k % 10 == f))
        .collect();
    let regrouped = eval::ten_fold(
        &order.iter().map(|&k| dist[k]).collect::<Vec<_>>(),
        &order.iter().map(|&k| same[k]).collect::<Vec<_>>(),
    );
    assert_eq!(given.accuracy_per_fold, regrouped.accuracy_per_fold);
    assert_eq!(
        given.best_threshold_per_fold,
        regrouped.best_threshold_per_fold
    );
    let contiguous = eval::ten_fold(&dist, &same);
    assert_ne!(given.accuracy_per_fold, contiguous.accuracy_per_fold);
}
