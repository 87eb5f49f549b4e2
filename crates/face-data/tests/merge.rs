//! Datasets merged by identity name: known names keep their labels, new ones follow; a part
//! without names, with a name twice (a label clash) or with an identity without images is
//! refused, naming it.

use std::path::PathBuf;
use std::sync::Arc;

use face_data::{FaceDataset, FaceSample, Merged, Subset, SyntheticConfig, SyntheticFaces};

/// Labels and names given outright; every image is black.
struct Listed {
    labels: Vec<usize>,
    names: Option<Vec<&'static str>>,
}

impl FaceDataset for Listed {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_identities(&self) -> usize {
        self.names.as_ref().map_or(3, Vec::len)
    }
    fn label(&self, index: usize) -> face_data::Result<usize> {
        self.check_index(index)?;
        Ok(self.labels[index])
    }
    fn get(&self, index: usize) -> face_data::Result<FaceSample> {
        Ok(FaceSample::new(
            image::RgbImage::new(4, 4),
            self.label(index)?,
        ))
    }
    fn source(&self) -> PathBuf {
        PathBuf::from("listed")
    }
    fn identity_name(&self, label: usize) -> Option<String> {
        Some(self.names.as_ref()?.get(label)?.to_string())
    }
}

fn listed(labels: &[usize], names: &[&'static str]) -> Box<dyn FaceDataset> {
    Box::new(Listed {
        labels: labels.to_vec(),
        names: Some(names.to_vec()),
    })
}

#[test]
fn known_names_keep_their_labels_and_new_ones_follow() {
    let known = ["ann".to_string(), "bob".to_string()];
    let merged = Merged::by_name(
        &known,
        vec![
            listed(&[0, 1, 1, 2], &["cat", "bob", "dan"]),
            listed(&[0, 1], &["ann", "eve"]),
        ],
    )
    .unwrap();
    assert_eq!(merged.names(), ["ann", "bob", "cat", "dan", "eve"]);
    assert_eq!(merged.num_identities(), 5);
    let labels: Vec<usize> = (0..merged.len())
        .map(|i| merged.label(i).unwrap())
        .collect();
    assert_eq!(labels, [2, 1, 1, 3, 0, 4]);
    assert_eq!(merged.get(5).unwrap().label, 4);
    assert_eq!(merged.locate(4).unwrap(), (1, 0));
    assert!(merged.get(6).is_err());
}

#[test]
fn clashes_unnamed_and_empty_identities_are_refused() {
    let clash = Merged::by_name(&[], vec![listed(&[0, 1], &["ann", "ann"])]);
    let message = clash.err().unwrap().to_string();
    assert!(
        message.contains("label clash") && message.contains("ann"),
        "{message}"
    );

    let unnamed = Box::new(Listed {
        labels: vec![0, 1, 2],
        names: None,
    });
    let message = Merged::by_name(&[], vec![unnamed])
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("has no name"), "{message}");

    let empty = Merged::by_name(&[], vec![listed(&[0, 2], &["ann", "bob", "cat"])]);
    let message = empty.err().unwrap().to_string();
    assert!(
        message.contains("\"bob\"") && message.contains("no images"),
        "{message}"
    );

    let known = ["ann".to_string(), "ann".to_string()];
    assert!(Merged::by_name(&known, vec![]).is_err());
}

#[test]
fn synthetic_ranges_name_the_same_people_and_unseen_images_are_new_renders() {
    let config = |first: u64, identities: usize| SyntheticConfig {
        identities,
        first_identity: first,
        per_identity: 3,
        held_out: 2,
        size: 32,
        ..Default::default()
    };
    let whole = SyntheticFaces::train(config(0, 6)).unwrap();
    let second_half = SyntheticFaces::train(config(3, 3)).unwrap();
    assert_eq!(second_half.identity_name(0), whole.identity_name(3));
    assert_eq!(
        second_half.get(4).unwrap().image,
        whole.get(3 * 3 + 4).unwrap().image
    );
    let unseen = SyntheticFaces::unseen_images(config(3, 3), 2).unwrap();
    assert_eq!(unseen.len(), 6);
    assert_eq!(unseen.identity_name(1), second_half.identity_name(1));
    let seen: Vec<_> = (0..9).map(|i| second_half.get(i).unwrap().image).collect();
    assert!((0..6).all(|i| !seen.contains(&unseen.get(i).unwrap().image)));
    assert!(SyntheticFaces::unseen_images(config(0, 6), 0).is_err());

    // A subset's identities are those it has samples of, relabelled in order, names kept.
    let subset = Subset::new(Arc::new(whole), vec![17, 0]).unwrap();
    assert_eq!((subset.len(), subset.num_identities()), (2, 2));
    assert_eq!((subset.label(0).unwrap(), subset.label(1).unwrap()), (1, 0));
    assert_eq!(subset.identity_name(1).as_deref(), Some("synthetic-0-5"));
    assert_eq!(subset.get(0).unwrap().label, 1);
    assert!(Subset::new(Arc::new(second_half), vec![9]).is_err());
}
