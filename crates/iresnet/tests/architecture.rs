//! Parameter counts and state-dict layout against PyTorch builds of insightface's architectures
//! (datasets/fixtures/backbones/*.json, written by tools/make_backbone_fixtures.py with torch 2.15.0).

mod common;
use common::*;

use iresnet::burn::tensor::Tensor;
use iresnet::plan::LayerKind;
use iresnet::{Backbone, BackboneConfig, BackboneStats, Describe, MbfHead, MobileFaceNetConfig};

fn count_for(name: &str) -> usize {
    read_json("backbones/param_counts.json")["params"][name]
        .as_u64()
        .unwrap() as usize
}

#[test]
fn parameter_counts_equal_pytorch_exactly() {
    let device = Default::default();
    // Every architecture PyTorch counted, by the name users type.
    let counts = read_json("backbones/param_counts.json");
    let names: Vec<String> = counts["params"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    let archs = names
        .iter()
        .map(|n| (n.as_str(), BackboneConfig::from_name(n).unwrap()));
    for (name, spec) in archs {
        let model = spec.init::<B>(&device).unwrap();
        let stats = BackboneStats::of(&model);
        assert_eq!(
            stats.params,
            count_for(name),
            "{name}: parameter count differs from PyTorch"
        );
        // ... and agrees with the sizes insightface quotes for the IResNets.
        let quoted = [("r18", 24.0), ("r34", 34.1), ("r50", 43.6), ("r100", 65.2)];
        if let Some((_, millions)) = quoted.iter().find(|(n, _)| *n == name) {
            let got = stats.params as f64 / 1e6;
            assert!(
                (got - millions).abs() < 0.06,
                "{name}: {got}M, quoted {millions}M"
            );
        }
        // The plan accounts for every parameter, so importers and FLOP counts see the whole model.
        let planned: usize = model
            .plan()
            .layers
            .iter()
            .map(|l| match l.kind {
                LayerKind::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    ..
                } => out_channels * in_channels / groups * kernel * kernel,
                LayerKind::BatchNorm { channels } => 2 * channels,
                LayerKind::PRelu { channels } => channels,
                LayerKind::Linear {
                    d_input,
                    d_output,
                    bias,
                } => d_input * d_output + if bias { d_output } else { 0 },
            })
            .sum();
        assert_eq!(
            planned, stats.params,
            "{name}: plan does not cover the module"
        );
    }
}

#[test]
fn plan_names_every_pytorch_state_dict_key_with_its_shape() {
    let keys = read_json("backbones/state_dict_keys.json");
    let device = Default::default();
    for name in ["r18", "mbf"] {
        let model = BackboneConfig::from_name(name)
            .unwrap()
            .init::<B>(&device)
            .unwrap();
        let mut ours: Vec<(String, Vec<u64>)> = Vec::new();
        for l in model.plan().layers {
            let t = |p: &str| format!("{}.{p}", l.torch);
            match l.kind {
                LayerKind::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    ..
                } => ours.push((
                    t("weight"),
                    vec![
                        out_channels as u64,
                        (in_channels / groups) as u64,
                        kernel as u64,
                        kernel as u64,
                    ],
                )),
                LayerKind::BatchNorm { channels } => {
                    for p in ["weight", "bias", "running_mean", "running_var"] {
                        ours.push((t(p), vec![channels as u64]));
                    }
                }
                LayerKind::PRelu { channels } => ours.push((t("weight"), vec![channels as u64])),
                LayerKind::Linear {
                    d_input,
                    d_output,
                    bias,
                } => {
                    ours.push((t("weight"), vec![d_output as u64, d_input as u64]));
                    if bias {
                        ours.push((t("bias"), vec![d_output as u64]));
                    }
                }
            }
        }
        let mut theirs: Vec<(String, Vec<u64>)> = keys["keys"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| {
                let k = kv[0].as_str().unwrap().to_string();
                let shape = kv[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                (k, shape)
            })
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}: PyTorch state dict layout");
    }
}

#[test]
fn feature_map_sizes_and_embedding_shapes() {
    let device = Default::default();
    for spec in [
        BackboneConfig::IResNet(
            iresnet::IResNetConfig::r18()
                .with_width_multiplier(0.125)
                .with_embedding_dim(16),
        ),
        BackboneConfig::MobileFaceNet(MobileFaceNetConfig::mbf().with_embedding_dim(16)),
        BackboneConfig::MobileFaceNet(
            MobileFaceNetConfig::mbf()
                .with_head(MbfHead::ConvFc)
                .with_embedding_dim(16),
        ),
    ] {
        let model = spec.init::<B>(&device).unwrap();
        let out = model.embed(Tensor::zeros([2, 3, 112, 112], &device));
        assert_eq!(out.dims(), [2, 16], "{}", spec.describe());
        // Every stage halves the side: the last conv of the plan sees 7x7.
        let last_conv = model
            .plan()
            .layers
            .iter()
            .rev()
            .find_map(|l| match l.kind {
                LayerKind::Conv { out_size, .. } => Some(out_size),
                _ => None,
            })
            .unwrap();
        let expected = match &spec {
            BackboneConfig::MobileFaceNet(c) if c.head == MbfHead::Gdc => 1, // the 7x7 GDC conv
            _ => 7,
        };
        assert_eq!(last_conv, expected, "{}", spec.describe());
    }
}

#[test]
fn wrong_inputs_are_errors_not_panics() {
    let device = Default::default();
    let model = BackboneConfig::from_name("mbf")
        .unwrap()
        .init::<B>(&device)
        .unwrap();
    let err = model
        .try_embed(Tensor::zeros([1, 3, 96, 96], &device))
        .unwrap_err();
    assert!(err.to_string().contains("[1, 3, 96, 96]"), "{err}");
    assert!(BackboneConfig::from_name("r42").is_err());
    let bad = BackboneConfig::IResNet(iresnet::IResNetConfig::new([2, 0, 2, 2]));
    assert!(bad.init::<B>(&device).is_err());
}

#[test]
fn macs_match_the_published_figures() {
    // insightface's model zoo lists r50 at 6.3 and r100 at 12.1 G(M)FLOPs for 112x112.
    let device = Default::default();
    for (name, gmacs, tol) in [("r50", 6.3, 0.1), ("r100", 12.1, 0.2)] {
        let model = BackboneConfig::from_name(name)
            .unwrap()
            .init::<B>(&device)
            .unwrap();
        let got = BackboneStats::of(&model).macs as f64 / 1e9;
        assert!((got - gmacs).abs() < tol, "{name}: {got} GMACs");
    }
}

/// Standard deviation of a conv's weights.
fn weight_std(w: Tensor<B, 4>) -> f64 {
    let v = w.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

#[test]
fn initialisation_follows_insightface() {
    let device = Default::default();
    // IResNet: conv weights normal(0, 0.1); BN weight 1, bias 0; the embedding BN's scale is frozen.
    let r18 = iresnet::IResNetConfig::r18().init::<B>(&device);
    let std = weight_std(r18.layer3[0].conv1.weight.val());
    assert!((std - 0.1).abs() < 0.002, "IResNet conv std {std}");
    assert_eq!(
        r18.bn1.gamma.val().into_data().to_vec::<f32>().unwrap(),
        vec![1.0; 64]
    );
    assert_eq!(
        r18.bn1.beta.val().into_data().to_vec::<f32>().unwrap(),
        vec![0.0; 64]
    );
    // Gradient flags live on autodiff tensors: check them on an autodiff backend.
    let trainable = iresnet::IResNetConfig::r18()
        .with_width_multiplier(0.125)
        .init::<iresnet::burn::backend::Autodiff<B>>(&device);
    assert!(
        !trainable.features.gamma.is_require_grad(),
        "features BN scale must not be trained"
    );
    assert!(
        trainable.features.beta.is_require_grad(),
        "features BN shift is trained"
    );
    assert!(trainable.fc.weight.is_require_grad());
    // MobileFaceNet: Kaiming normal with PyTorch's fan-out (out_channels * k * k, groups ignored).
    let mbf = MobileFaceNetConfig::mbf().init::<B>(&device);
    let expand = mbf.block2[0].expand.conv.weight.val(); // 1x1, 256 -> 256
    let std = weight_std(expand);
    let want = (2.0f64 / 256.0).sqrt();
    assert!(
        (std - want).abs() / want < 0.03,
        "mbf 1x1 conv std {std}, want {want}"
    );
    let depthwise = mbf.block2[0].depthwise.conv.weight.val(); // 3x3 depthwise, 256 channels
    let std = weight_std(depthwise);
    let want = (2.0f64 / (256.0 * 9.0)).sqrt();
    assert!(
        (std - want).abs() / want < 0.1,
        "mbf depthwise std {std}, want {want}"
    );
}
