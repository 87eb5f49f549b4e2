//! The loader: order fixed by (seed, epoch), batches as tensors, balanced sampling, bounded
//! prefetch, and the same batches whatever the thread count.

mod common;

use std::collections::HashMap;

use common::synthetic_folder;
use face_augment::Pipeline;
use face_data::{
    FaceDataset, ImageFolder, Loader, LoaderConfig, Sampling, SyntheticConfig, SyntheticFaces,
};

fn synthetic(ids: usize, per: usize) -> SyntheticFaces {
    SyntheticFaces::train(SyntheticConfig {
        identities: ids,
        per_identity: per,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn an_epoch_visits_every_sample_once_in_a_seeded_order() {
    let loader = Loader::new(
        synthetic(5, 6),
        Pipeline::arcface_default(),
        LoaderConfig {
            batch_size: 4,
            drop_last: false,
            ..Default::default()
        },
    )
    .unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 8);
    assert_eq!(loader.batches_per_epoch(), 8);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(seen, (0..30).collect::<Vec<_>>(), "shuffled");
    seen.sort();
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.shape[1..], [3, 112, 112]);
        assert_eq!(b.images.len(), b.shape.iter().product::<usize>());
        for (i, &label) in b.indices.iter().zip(&b.labels) {
            assert_eq!(label, i / 6);
        }
    }
    assert_eq!(loader.order(0), loader.order(0));
    assert_ne!(loader.order(0), loader.order(1));
    let (images, labels) = batches[0].to_tensors::<burn::backend::Flex>(&Default::default());
    assert_eq!(images.dims(), [4, 3, 112, 112]);
    assert_eq!(labels.dims(), [4]);
}

#[test]
fn same_batches_on_one_thread_or_many() {
    let run = |workers: usize| {
        let config = LoaderConfig {
            batch_size: 5,
            seed: 3,
            workers,
            ..Default::default()
        };
        let loader = Loader::new(synthetic(4, 4), Pipeline::arcface_default(), config).unwrap();
        loader.epoch(2).map(Result::unwrap).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn balanced_sampling_gives_every_identity_the_same_weight() {
    // Identities with 1 to 12 images.
    let tmp = tempfile::tempdir().unwrap();
    synthetic_folder(tmp.path(), 4, 12);
    for (id, keep) in [(0usize, 1usize), (1, 3), (2, 12), (3, 6)] {
        let dir = tmp.path().join(format!("person_{id:03}"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.into_iter().skip(keep) {
            std::fs::remove_file(f).unwrap();
        }
    }
    let folder = ImageFolder::open(tmp.path()).unwrap();
    assert_eq!(folder.len(), 22);
    let loader = Loader::new(
        folder,
        Pipeline::insightface_minimal(),
        LoaderConfig {
            batch_size: 8,
            sampling: Sampling::Balanced { per_identity: 4 },
            ..Default::default()
        },
    )
    .unwrap();
    let order = loader.order(0);
    assert_eq!(order.len(), 16);
    let mut per_label: HashMap<usize, usize> = HashMap::new();
    for &i in &order {
        *per_label
            .entry(loader.dataset().label(i).unwrap())
            .or_default() += 1;
    }
    assert!(per_label.values().all(|&n| n == 4), "{per_label:?}");
    // An identity with enough images gets distinct ones.
    let big: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| loader.dataset().label(i).unwrap() == 2)
        .collect();
    let mut distinct = big.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4);
}

/// A dataset that counts how many samples the loader has read.
struct Counting {
    inner: SyntheticFaces,
    gets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaceDataset for Counting {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn num_identities(&self) -> usize {
        self.inner.num_identities()
    }
    fn label(&self, index: usize) -> face_data::Result<usize> {
        self.inner.label(index)
    }
    fn get(&self, index: usize) -> face_data::Result<face_data::FaceSample> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(index)
    }
    fn source(&self) -> std::path::PathBuf {
        self.inner.source()
    }
}

#[test]
fn prefetch_is_bounded_and_dropping_the_epoch_stops_it() {
    use std::sync::atomic::Ordering;
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dataset = Counting {
        inner: synthetic(50, 4),
        gets: gets.clone(),
    };
    let (batch, prefetch) = (2, 2);
    let config = LoaderConfig {
        batch_size: batch,
        prefetch,
        ..Default::default()
    };
    let loader = Loader::new(dataset, Pipeline::insightface_minimal(), config).unwrap();
    let mut epoch = loader.epoch(0);
    assert_eq!(epoch.next().unwrap().unwrap().labels.len(), 2);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Consumed one batch; at most `prefetch` wait in the channel and one more is being built.
    let read = gets.load(Ordering::SeqCst);
    assert!(
        read <= (1 + prefetch + 1) * batch,
        "{read} samples read ahead of a consumer that took 1 batch"
    );
    drop(epoch);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after_drop = gets.load(Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        gets.load(Ordering::SeqCst),
        after_drop,
        "the producer kept reading after the epoch was dropped"
    );
    assert!(after_drop < 200, "the whole epoch was read");
    assert_eq!(loader.epoch(1).take(3).count(), 3);
}

#[test]
fn impossible_loader_configs_are_errors() {
    assert!(Loader::new(
        synthetic(2, 2),
        Pipeline::insightface_minimal(),
        LoaderConfig {
            batch_size: 0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Loader::new(
        synthetic(2, 2),
        Pipeline::insightface_minimal(),
        LoaderConfig {
            sampling: Sampling::Balanced { per_identity: 0 },
            ..Default::default()
        }
    )
    .is_err());
}
