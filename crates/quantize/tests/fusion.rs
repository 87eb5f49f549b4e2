//! Late fusion (one backbone per modality) on the engine: the f32 engine matches Burn with every
//! modality and with depth missing, and the int8 one (each branch calibrated on its own
//! modality) stays close to it.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use face_data::{FaceDataset, FaceSample, Modality, SyntheticConfig, SyntheticFaces};
use iresnet::{Backbone, BackboneConfig, Fuse, FusionBranch, IResNetConfig, LateFusionConfig};
use quantize::{FusionEngine, QuantizeOptions};

fn model(fuse: Fuse) -> iresnet::LateFusion<Flex> {
    let branch = |name: &str, first: usize, planes: usize| FusionBranch {
        name: name.into(),
        first_plane: first,
        planes,
        backbone: BackboneConfig::IResNet(
            IResNetConfig::new([1, 1, 1, 1])
                .with_widths([8, 8, 16, 16])
                .with_embedding_dim(32)
                .with_in_channels(planes),
        ),
    };
    LateFusionConfig {
        branches: vec![
            branch("rgb", 0, 3),
            branch("nir", 3, 1),
            branch("depth", 4, 1),
        ],
        fuse,
        embedding_dim: 32,
    }
    .init::<Flex>(&Default::default())
    .unwrap()
}

fn faces(n: usize) -> Vec<FaceSample> {
    let data = SyntheticFaces::train(SyntheticConfig {
        identities: n,
        per_identity: 1,
        modalities: Modality::ALL.to_vec(),
        night: 0.5,
        ..SyntheticConfig::default()
    })
    .unwrap();
    (0..n).map(|i| data.get(i).unwrap()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    face_embed::cosine(a, b)
}

/// Burn's embeddings of `faces` with `missing` zeroed.
fn burn_embed(
    net: &iresnet::LateFusion<Flex>,
    faces: &[FaceSample],
    missing: &[Modality],
) -> Vec<Vec<f32>> {
    let data: Vec<f32> = (faces.iter().enumerate())
        .flat_map(|(i, f)| f.planes(&Modality::ALL, missing, i).unwrap())
        .collect();
    let x = Tensor::<Flex, 4>::from_data(
        TensorData::new(data, [faces.len(), 5, 112, 112]),
        &Default::default(),
    );
    let e: Vec<f32> = net.embed(x).into_data().to_vec().unwrap();
    e.chunks(32).map(<[f32]>::to_vec).collect()
}

#[test]
fn late_fusion_runs_on_the_engine_in_f32_and_int8_with_a_modality_missing() {
    let faces = faces(12);
    let rgb: Vec<&[u8]> = faces.iter().map(|f| f.image.as_raw().as_slice()).collect();
    let nir: Vec<&[u8]> = faces
        .iter()
        .map(|f| f.nir.as_ref().unwrap().as_raw().as_slice())
        .collect();
    let depth: Vec<&[u8]> = faces
        .iter()
        .map(|f| f.depth.as_ref().unwrap().as_raw().as_slice())
        .collect();
    for fuse in [Fuse::Concat, Fuse::Weighted] {
        let net = model(fuse);
        let float = FusionEngine::from_late_fusion(&net, &[], None).unwrap();
        let calibration = vec![rgb.clone(), nir.clone(), depth.clone()];
        let int8 =
            FusionEngine::from_late_fusion(&net, &calibration, Some(QuantizeOptions::default()))
                .unwrap();
        assert!(int8.branches.iter().all(|(_, e)| e.int8_weights() > 0));
        for (missing, inputs) in [
            (vec![], [Some(&rgb[..]), Some(&nir[..]), Some(&depth[..])]),
            (
                vec![Modality::Depth],
                [Some(&rgb[..]), Some(&nir[..]), None],
            ),
        ] {
            let reference = burn_embed(&net, &faces, &missing);
            let f = float.embed(&inputs).unwrap();
            let q = int8.embed(&inputs).unwrap();
            for k in 0..faces.len() {
                let c = cosine(&f[k], &reference[k]);
                assert!(
                    c > 0.9999,
                    "{fuse:?} missing {missing:?}: f32 engine vs Burn {c}"
                );
                let c = cosine(&q[k], &f[k]);
                assert!(c > 0.98, "{fuse:?} missing {missing:?}: int8 vs f32 {c}");
            }
        }
        // Inputs that do not fit are refused.
        assert!(float.embed(&[Some(&rgb[..]), None]).is_err());
        assert!(float.embed(&[None, None, None]).is_err());
        assert!(float
            .embed(&[Some(&nir[..]), Some(&nir[..]), None])
            .is_err());
    }
}

#[test]
fn the_burn_model_and_the_engine_embed_paired_images_alike() {
    use eval::{MultimodalBurnEmbedder, MultimodalEmbedder};
    use face_embed::FaceImages;
    let faces = faces(6);
    let net = model(Fuse::Concat);
    let engine = FusionEngine::from_late_fusion(&net, &[], None).unwrap();
    let burn =
        MultimodalBurnEmbedder::<Flex, _>::new(net, &Modality::ALL, Default::default()).unwrap();
    // Faces from devices with and without a depth sensor, mixed in one call.
    let images: Vec<FaceImages> = (faces.iter().enumerate())
        .map(|(k, f)| FaceImages {
            rgb: Some(f.image.clone()),
            nir: f.nir.clone(),
            depth: if k % 2 == 0 { f.depth.clone() } else { None },
        })
        .collect();
    let a = burn.embed_images(&images).unwrap();
    let b = engine.embed_images(&images).unwrap();
    assert_eq!(engine.embedding_dim(), 32);
    for k in 0..faces.len() {
        assert!(
            cosine(&a[k], &b[k]) > 0.9999,
            "face {k}: {}",
            cosine(&a[k], &b[k])
        );
    }
    // A model over other planes is refused up front.
    let wrong = model(Fuse::Concat);
    assert!(
        MultimodalBurnEmbedder::<Flex, _>::new(wrong, &[Modality::Rgb], Default::default())
            .is_err()
    );
}
