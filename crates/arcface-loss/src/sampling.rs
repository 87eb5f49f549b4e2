//! Partial FC's class sampling (An et al. 2022): every class present in the batch plus random
//! negatives, so a head over millions of identities scores only a fraction of them per step.

use rand::{rngs::StdRng, seq::index, SeedableRng};

/// Which classes a batch is scored against, and each sample's column among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSample {
    /// Sorted class ids that were scored; `None` means all of them (no sampling).
    pub classes: Option<Vec<usize>>,
    /// For each sample, the logit column of its label (its rank in `classes`).
    pub targets: Vec<usize>,
}

impl ClassSample {
    /// Every class is scored; targets are the labels themselves.
    pub fn all(labels: &[usize]) -> Self {
        Self {
            classes: None,
            targets: labels.to_vec(),
        }
    }

    /// Number of logit columns this sample gives out of `num_classes`.
    pub fn len(&self, num_classes: usize) -> usize {
        self.classes.as_ref().map_or(num_classes, Vec::len)
    }

    /// The class id behind a logit column.
    pub fn class_of(&self, column: usize) -> usize {
        self.classes.as_ref().map_or(column, |c| c[column])
    }
}

/// Draws, for one batch, all positive classes plus uniformly random negatives up to `num_sample`
/// (insightface's rule: when the batch alone has more classes than that, only they are kept).
///
/// Labels must be `< num_classes` (the head checks this before sampling).
pub fn sample_classes(
    labels: &[usize],
    num_classes: usize,
    num_sample: usize,
    rng: &mut StdRng,
) -> ClassSample {
    let mut positives = labels.to_vec();
    positives.sort_unstable();
    positives.dedup();

    let classes = if num_sample > positives.len() {
        let extra = (num_sample - positives.len()).min(num_classes - positives.len());
        // Draw ranks among the classes that are not positives, then turn each rank into a class
        // id by stepping over the positives below it (both lists sorted, one merge pass).
        let mut ranks = index::sample(rng, num_classes - positives.len(), extra).into_vec();
        ranks.sort_unstable();
        let mut classes = Vec::with_capacity(positives.len() + extra);
        let mut pos = positives.iter().peekable();
        let mut skipped = 0;
        for rank in ranks {
            while let Some(&&p) = pos.peek() {
                if p <= rank + skipped {
                    classes.push(p);
                    skipped += 1;
                    pos.next();
                } else {
                    break;
                }
            }
            classes.push(rank + skipped);
        }
        classes.extend(pos);
        classes
    } else {
        positives
    };

    let targets = labels
        .iter()
        .map(|label| {
            classes
                .binary_search(label)
                .expect("every label is among the sampled classes")
        })
        .collect();
    ClassSample {
        classes: Some(classes),
        targets,
    }
}

/// The sampler's RNG for one training step: a pure function of (seed, step), so a resumed run
/// draws the same classes and results do not depend on how many threads ran before.
pub fn step_rng(seed: u64, step: u64) -> StdRng {
    // SplitMix64 finaliser over the pair, so neighbouring steps give unrelated streams.
    let mut z = seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negatives_skip_positives_and_stay_in_range() {
        for seed in 0..200 {
            let mut rng = step_rng(seed, 0);
            let labels = [3, 3, 0, 9, 5];
            let s = sample_classes(&labels, 10, 7, &mut rng);
            let classes = s.classes.clone().unwrap();
            assert_eq!(classes.len(), 7);
            assert!(classes.windows(2).all(|w| w[0] < w[1]), "{classes:?}");
            assert!(classes.iter().all(|&c| c < 10));
            for (label, target) in labels.iter().zip(&s.targets) {
                assert_eq!(classes[*target], *label);
            }
        }
    }

    #[test]
    fn more_positives_than_the_budget_keeps_only_positives() {
        let mut rng = step_rng(1, 2);
        let s = sample_classes(&[4, 1, 7, 1], 100, 2, &mut rng);
        assert_eq!(s.classes, Some(vec![1, 4, 7]));
        assert_eq!(s.targets, vec![1, 0, 2, 0]);
    }
}
