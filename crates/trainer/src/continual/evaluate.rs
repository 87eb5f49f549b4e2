//! Old- and new-identity accuracy, at every evaluation of a continual round: how well the model
//! still knows the people it knew (forgetting) and how well it learnt the new ones, on images
//! never trained on. Identification is top-1 against the head's centres; verification is
//! insightface's 10-fold accuracy on pairs within each group.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arcface_loss::MarginFc;
use burn::module::Module;
use burn::tensor::backend::Backend;
use eval::{embed_normalized, verify_pairs, BurnEmbedder};
use face_data::recordio::names_path;
use face_data::{FaceDataset, Merged, RecordDataset};
use image::RgbImage;
use iresnet::Backbone;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::TrainError;
use crate::hooks::EvalHook;

/// The evaluation set's file in a continual run's folder: unseen images of every identity so
/// far, with their names.
pub(crate) const EVAL_FILE: &str = "eval.rec";

/// Faces of known identities, each in the old or the new group.
pub struct OldNew {
    faces: Vec<RgbImage>,
    /// Each face's head label.
    labels: Vec<usize>,
    /// Whether each face's identity is in this round's data.
    new: Vec<bool>,
    flip: bool,
    seed: u64,
}

impl OldNew {
    /// A report over `faces` with their head `labels`, each marked new (in this round's data)
    /// or old; `flip` embeds each face with its mirror image as verification does.
    pub fn new(
        faces: Vec<RgbImage>,
        labels: Vec<usize>,
        new: Vec<bool>,
        flip: bool,
        seed: u64,
    ) -> Self {
        Self {
            faces,
            labels,
            new,
            flip,
            seed,
        }
    }

    /// The round's report from `out/eval.rec`, written the first time from `sources` (the old
    /// run's evaluation images and this round's held-back ones); `None` without any.
    pub(super) fn prepare(
        sources: impl FnOnce() -> Result<Vec<Box<dyn FaceDataset>>, TrainError>,
        head: &[String],
        new: &HashSet<String>,
        out: &Path,
        flip: bool,
        seed: u64,
    ) -> Result<Option<Self>, TrainError> {
        let path = out.join(EVAL_FILE);
        if !(path.is_file() && names_path(&path).is_file()) {
            let sources = sources()?;
            if sources.is_empty() {
                return Ok(None);
            }
            let all = Merged::by_name(&[], sources)?;
            face_data::pack_dataset(&all, &path, |_| {})?;
        }
        let set = RecordDataset::open(&path)?;
        let label_of: HashMap<&str, usize> = (head.iter().enumerate())
            .map(|(k, n)| (n.as_str(), k))
            .collect();
        let mut report = Self::new(vec![], vec![], vec![], flip, seed);
        let mut indices = Vec::with_capacity(set.len());
        for i in 0..set.len() {
            let name = set.identity_name(set.label(i)?).unwrap_or_default();
            // An identity the head does not know (dropped by the user) is not reported on.
            let Some(&label) = label_of.get(name.as_str()) else {
                continue;
            };
            indices.push(i);
            report.labels.push(label);
            report.new.push(new.contains(&name));
        }
        report.faces = face_data::images(&set, &indices)?;
        Ok(Some(report))
    }

    /// One face each of up to `limit` old identities, and their labels.
    pub(super) fn old_faces(&self, limit: usize) -> (Vec<RgbImage>, Vec<usize>) {
        let mut seen = HashSet::new();
        (0..self.faces.len())
            .filter(|&i| !self.new[i] && seen.insert(self.labels[i]))
            .take(limit)
            .map(|i| (self.faces[i].clone(), self.labels[i]))
            .unzip()
    }

    /// Verification accuracy over pairs within the faces `group`: consecutive images of each
    /// identity, and as many pairs of different identities drawn from the seed; `None` below
    /// the 10 pairs 10-fold needs.
    fn verification(&self, e: &[Vec<f32>], group: &[usize]) -> Result<Option<f64>, TrainError> {
        let mut by_label: HashMap<usize, Vec<usize>> = HashMap::new();
        for &i in group {
            by_label.entry(self.labels[i]).or_default().push(i);
        }
        let mut labels: Vec<usize> = by_label.keys().copied().collect();
        labels.sort_unstable();
        if labels.len() < 2 {
            return Ok(None);
        }
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x01d_9e3);
        let (mut pairs, mut same) = (Vec::new(), Vec::new());
        for (k, label) in labels.iter().enumerate() {
            let faces = &by_label[label];
            for w in faces.windows(2) {
                let other = labels[(k + rng.random_range(1..labels.len())) % labels.len()];
                let theirs = &by_label[&other];
                let stranger = theirs[rng.random_range(0..theirs.len())];
                pairs.extend([e[w[0]].clone(), e[w[1]].clone()]);
                pairs.extend([e[w[0]].clone(), e[stranger].clone()]);
                same.extend([true, false]);
            }
        }
        if same.len() < 10 {
            return Ok(None);
        }
        let report = verify_pairs(&pairs, &same, None)?;
        Ok(Some(report.ten_fold.accuracy_mean))
    }
}

impl<B: Backend, M: Backbone<B> + Module<B>> EvalHook<B, M, MarginFc<B>> for OldNew {
    fn evaluate(
        &self,
        backbone: &M,
        head: &MarginFc<B>,
        _step: u64,
        device: &B::Device,
    ) -> Result<Vec<(String, f64)>, TrainError> {
        let embedder = BurnEmbedder::new(backbone.clone(), device.clone());
        let e = embed_normalized(&embedder, &self.faces, self.flip, |_| {})
            .map_err(eval::EvalError::from)?;
        let centres = head.centres.val();
        let [classes, dim] = centres.dims();
        let mut rows = (centres.to_data().convert::<f32>().to_vec::<f32>())
            .map_err(|e| TrainError::Other(format!("the head's centres: {e:?}")))?;
        rows.chunks_mut(dim).for_each(eval::normalize);
        // Embeddings and rows are unit vectors: the cosine is their dot product.
        let nearest = |v: &[f32]| -> usize {
            (0..classes)
                .map(|k| face_embed::dot(v, &rows[k * dim..(k + 1) * dim]))
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(k, _)| k)
        };
        let mut values = Vec::new();
        for (name, is_new) in [("old", false), ("new", true)] {
            let group: Vec<usize> = (0..self.faces.len())
                .filter(|&i| self.new[i] == is_new)
                .collect();
            if group.is_empty() {
                continue;
            }
            let right = (group.iter())
                .filter(|&&i| nearest(&e[i]) == self.labels[i])
                .count();
            values.push((
                format!("{name}_identification"),
                right as f64 / group.len() as f64,
            ));
            if let Some(accuracy) = self.verification(&e, &group)? {
                values.push((format!("{name}_verification"), accuracy));
            }
        }
        Ok(values)
    }
}
