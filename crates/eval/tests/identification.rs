//! 1:N metrics on constructed galleries whose answers are known by hand.

use eval::{closed_set, open_set, rank1_with_distractors, search, Labelled};

/// A unit vector at `angle` degrees in the plane (cosine between two = cos of their difference).
fn at(angle: f64) -> Vec<f32> {
    let r = angle.to_radians();
    vec![r.cos() as f32, r.sin() as f32]
}

fn set(items: &[(f64, u64)]) -> Labelled {
    let mut s = Labelled::default();
    for &(a, id) in items {
        s.push(at(a), id);
    }
    s
}

#[test]
fn ranks_cmc_and_rank_k_by_hand() {
    // Gallery identities at 0, 30, 60, 90 degrees (identity 2 enrolled twice).
    let gallery = set(&[(0.0, 1), (30.0, 2), (100.0, 2), (60.0, 3), (90.0, 4)]);
    // Probe of 1 at 5 deg: nearest 1 -> rank 1. Probe of 3 at 40 deg: 2 (30) is nearer than 3 (60),
    // -> rank 2. Probe of 4 at 20 deg: order 2 (30), 1 (0), 3 (60), 4 (90) -> rank 4.
    // Probe of 2 at 97 deg: its second image at 100 (3 deg) beats 4 at 90 (7 deg) -> rank 1.
    let probes = set(&[(5.0, 1), (40.0, 3), (20.0, 4), (97.0, 2)]);
    let results = search(&gallery, &probes);
    let ranks: Vec<Option<usize>> = results.iter().map(|r| r.rank).collect();
    assert_eq!(ranks, vec![Some(1), Some(2), Some(4), Some(1)]);
    let c = closed_set(&results, 5);
    assert_eq!(c.mated_probes, 4);
    assert_eq!(c.cmc, vec![0.5, 0.75, 0.75, 1.0, 1.0]);
    assert_eq!((c.rank1, c.rank5, c.rank10), (0.5, 1.0, 1.0));
}

#[test]
fn tpir_at_fpir_by_hand() {
    let gallery = set(&[(0.0, 1), (90.0, 2), (180.0, 3)]);
    // Mated probes: 1 at 10 deg (cos .985), 2 at 60 (cos .866, rank 1), 3 at 142 (cos 38 = .788 to
    // 3; 2 at 90 scores cos 52 = .616: rank 1).
    // Non-mated (identity 9): top scores cos 45 = .707, cos 35 = .819, cos 5 = .996, cos 40 = .766.
    let probes = set(&[
        (10.0, 1),
        (60.0, 2),
        (142.0, 3),
        (45.0, 9),
        (125.0, 9),
        (355.0, 9),
        (220.0, 9),
    ]);
    let results = search(&gallery, &probes);
    assert!(results[3..].iter().all(|r| r.rank.is_none()));
    let points = open_set(&results, &[0.0, 0.25, 0.5]).unwrap();
    // FPIR 0: threshold = the highest non-mated top score, .996 (cos 5) -> no mated probe above it.
    assert!((points[0].threshold - 5f64.to_radians().cos()).abs() < 1e-6);
    assert_eq!(points[0].tpir, 0.0);
    // FPIR .25: floor(.25 * 4) + 1 = 2nd highest = .819 (cos 35): probes 1 (.985) and 2 (.866).
    assert!((points[1].tpir - 2.0 / 3.0).abs() < 1e-12);
    // FPIR .5: 3rd highest = .766 (cos 40): all three mated probes (.985, .866, .788) are above.
    assert_eq!(points[2].tpir, 1.0);
    // A closed set has no open-set numbers.
    assert!(open_set(&results[..3], &[0.1]).is_none());
}

#[test]
fn rank1_falls_as_distractors_are_added() {
    let gallery = set(&[(0.0, 1), (90.0, 2)]);
    let probes = set(&[(10.0, 1), (80.0, 2)]);
    // Distractor 1 at 170 (far from both), 2 at 12 (nearer probe 1 than its mate: 2 deg vs 10),
    // 3 at 78 (nearer probe 2: 2 deg vs 10).
    let distractors = set(&[(170.0, 100), (12.0, 101), (78.0, 102)]);
    let curve = rank1_with_distractors(&gallery, &probes, &distractors, &[0, 1, 2, 3, 10]);
    assert_eq!(curve, vec![(0, 1.0), (1, 1.0), (2, 0.5), (3, 0.0)]);
}
