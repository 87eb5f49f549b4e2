//! Several datasets as one, their identities matched by name: the same person in two sources
//! gets one label. Continual learning trains on new data merged with a replay buffer of old
//! people under the labels an existing head already gives them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::dataset::{FaceDataset, FaceSample};
use crate::error::{DataError, Result};

/// Samples `indices` of a dataset, e.g. one with some images kept back for evaluation. Its
/// identities are those with samples in it, in the dataset's order, with their names; several
/// subsets can share one dataset.
pub struct Subset {
    inner: Arc<dyn FaceDataset>,
    indices: Vec<usize>,
    /// Each sample's label here.
    labels: Vec<usize>,
    /// The dataset's label of each identity here.
    identities: Vec<usize>,
}

impl Subset {
    /// The samples `indices` of `inner`, in that order; an index past its end is an error.
    pub fn new(inner: Arc<dyn FaceDataset>, indices: Vec<usize>) -> Result<Self> {
        let outer = (indices.iter())
            .map(|&i| {
                inner.check_index(i)?;
                inner.label(i)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut identities = outer.clone();
        identities.sort_unstable();
        identities.dedup();
        let labels = (outer.iter())
            .map(|l| identities.binary_search(l).expect("listed"))
            .collect();
        Ok(Self {
            inner,
            indices,
            labels,
            identities,
        })
    }
}

impl FaceDataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn num_identities(&self) -> usize {
        self.identities.len()
    }
    fn label(&self, index: usize) -> Result<usize> {
        self.check_index(index)?;
        Ok(self.labels[index])
    }
    fn get(&self, index: usize) -> Result<FaceSample> {
        self.check_index(index)?;
        let mut sample = self.inner.get(self.indices[index])?;
        sample.label = self.labels[index];
        Ok(sample)
    }
    fn source(&self) -> PathBuf {
        self.inner.source()
    }
    fn identity_name(&self, label: usize) -> Option<String> {
        self.inner.identity_name(*self.identities.get(label)?)
    }
}

/// Datasets merged by identity name. Labels: the `known` names keep their positions, then
/// names met for the first time get the next labels, in the order the parts list them.
pub struct Merged {
    parts: Vec<Box<dyn FaceDataset>>,
    /// First sample of each part, and the total at the end.
    starts: Vec<usize>,
    /// Each part's labels mapped to merged labels.
    labels: Vec<Vec<usize>>,
    names: Vec<String>,
}

impl Merged {
    /// Merges `parts` after `known`. Every part must name each of its identities, once, and hold
    /// images of each (an identity without images would be a class nothing trains).
    pub fn by_name(known: &[String], parts: Vec<Box<dyn FaceDataset>>) -> Result<Self> {
        let mut names = known.to_vec();
        let mut label_of: HashMap<String, usize> = HashMap::with_capacity(names.len());
        for (label, name) in names.iter().enumerate() {
            if let Some(first) = label_of.insert(name.clone(), label) {
                return Err(DataError::Config {
                    what: "merged dataset",
                    reason: format!(
                        "the known identities name labels {first} and {label} both {name:?}"
                    ),
                });
            }
        }
        let mut labels = Vec::with_capacity(parts.len());
        let mut starts = vec![0];
        for part in &parts {
            let part_names = named(part.as_ref())?;
            let mut map = Vec::with_capacity(part_names.len());
            for name in part_names {
                let next = names.len();
                let label = *label_of.entry(name.clone()).or_insert(next);
                if label == next {
                    names.push(name);
                }
                map.push(label);
            }
            labels.push(map);
            starts.push(starts.last().copied().unwrap_or(0) + part.len());
        }
        Ok(Self {
            parts,
            starts,
            labels,
            names,
        })
    }

    /// Identity names in label order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The part sample `index` comes from, and its index there.
    pub fn locate(&self, index: usize) -> Result<(usize, usize)> {
        self.check_index(index)?;
        let part = self.starts.partition_point(|&s| s <= index) - 1;
        Ok((part, index - self.starts[part]))
    }
}

/// A part's identity names in label order, checked: all named, each once, each with images.
fn named(part: &dyn FaceDataset) -> Result<Vec<String>> {
    let bad = |reason: String| DataError::Layout {
        path: part.source(),
        reason,
    };
    let n = part.num_identities();
    let mut names = Vec::with_capacity(n);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(n);
    for label in 0..n {
        let name = part.identity_name(label).ok_or_else(|| {
            bad(format!(
                "identity {label} has no name: merging needs named identities (an image folder, a .rec with its names.json, the synthetic set)"
            ))
        })?;
        if let Some(first) = seen.insert(name.clone(), label) {
            return Err(bad(format!(
                "label clash: identities {first} and {label} are both named {name:?}"
            )));
        }
        names.push(name);
    }
    let images = crate::dataset::by_identity(part)?;
    if let Some(empty) = images.iter().position(Vec::is_empty) {
        return Err(bad(format!(
            "identity {:?} (label {empty}) has no images",
            names[empty]
        )));
    }
    Ok(names)
}

impl FaceDataset for Merged {
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }
    fn num_identities(&self) -> usize {
        self.names.len()
    }
    fn label(&self, index: usize) -> Result<usize> {
        let (part, i) = self.locate(index)?;
        Ok(self.labels[part][self.parts[part].label(i)?])
    }
    fn get(&self, index: usize) -> Result<FaceSample> {
        let (part, i) = self.locate(index)?;
        let mut sample = self.parts[part].get(i)?;
        sample.label = self.labels[part][sample.label];
        Ok(sample)
    }
    fn source(&self) -> PathBuf {
        let sources: Vec<String> = (self.parts.iter())
            .map(|p| p.source().display().to_string())
            .collect();
        PathBuf::from(sources.join(" + "))
    }
    fn identity_name(&self, label: usize) -> Option<String> {
        self.names.get(label).cloned()
    }
}
