//! Training-mode semantics against PyTorch 2.15.0: one forward/backward of the tiny IResNet in
//! train mode (batch statistics), its gradients, and PyTorch's running-statistics update with the
//! unbiased batch variance (datasets/fixtures/backbones/tiny_iresnet_train.json, written by
//! tools/make_backbone_fixtures.py).

mod common;
use common::*;

use iresnet::burn::backend::Autodiff;
use iresnet::burn::tensor::{Tensor, TensorData};
use iresnet::import::import_file;
use iresnet::{AnyBackbone, BackboneConfig, IResNetConfig};

type AD = Autodiff<B>;

fn floats(v: &serde_json::Value) -> Vec<f32> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().unwrap() as f32),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn values<const D: usize>(t: Tensor<impl iresnet::burn::tensor::backend::Backend, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn close(ours: &[f32], theirs: &[f32], tol: f32, what: &str) {
    let ours = &ours[..theirs.len()];
    let err = max_relative_error(ours, theirs);
    assert!(err < tol, "{what}: relative error {err:e}");
}

#[test]
fn one_training_step_matches_pytorch() {
    let reference = read_json("backbones/tiny_iresnet_train.json");
    let device = Default::default();
    let spec = BackboneConfig::IResNet(
        IResNetConfig::new([2, 1, 2, 1])
            .with_widths([8, 16, 24, 32])
            .with_embedding_dim(24),
    );
    let AnyBackbone::IResNet(model) =
        import_file::<AD>(&fixture("backbones/tiny_iresnet.pth"), &spec, &device).unwrap()
    else {
        unreachable!()
    };

    let x = Tensor::<AD, 4>::from_data(TensorData::new(fixed_input(4), [4, 3, 112, 112]), &device);
    let y = model.forward(x);
    let [n, d] = y.dims();
    let w: Vec<f32> = (0..n)
        .flat_map(|i| (0..d).map(move |j| (0.7 * i as f64 + 0.3 * j as f64 + 0.1).sin() as f32))
        .collect();
    let w = Tensor::<AD, 2>::from_data(TensorData::new(w, [n, d]), &device);
    close(
        &values(y.clone()),
        &floats(&reference["output"]),
        1e-4,
        "train-mode output",
    );
    let loss = (y * w).sum();
    let loss_value = values(loss.clone())[0];
    let want = reference["loss_value"].as_f64().unwrap() as f32;
    assert!(
        (loss_value - want).abs() <= 1e-4 * want.abs().max(1.0),
        "loss {loss_value} vs {want}"
    );

    let grads = loss.backward();
    let g = |name: &str| floats(&reference["grads"][name]);
    close(
        &values(model.conv1.weight.grad(&grads).unwrap()),
        &g("conv1.weight"),
        1e-3,
        "conv1.weight",
    );
    close(
        &values(model.bn1.gamma.grad(&grads).unwrap()),
        &g("bn1.weight"),
        1e-3,
        "bn1.weight",
    );
    close(
        &values(model.prelu.alpha.grad(&grads).unwrap()),
        &g("prelu.weight"),
        1e-3,
        "prelu.weight",
    );
    close(
        &values(model.layer1[0].bn1.beta.grad(&grads).unwrap()),
        &g("layer1.0.bn1.bias"),
        1e-3,
        "layer1.0.bn1.bias",
    );
    close(
        &values(model.layer4[0].conv2.weight.grad(&grads).unwrap()),
        &g("layer4.0.conv2.weight"),
        1e-3,
        "layer4.0.conv2.weight",
    );
    let downsample = model.layer4[0].downsample.as_ref().unwrap();
    close(
        &values(downsample.conv.weight.grad(&grads).unwrap()),
        &g("layer4.0.downsample.0.weight"),
        1e-3,
        "downsample",
    );
    // Burn stores Linear weights as [in, out]; PyTorch as [out, in].
    close(
        &values(model.fc.weight.grad(&grads).unwrap().transpose()),
        &g("fc.weight"),
        1e-3,
        "fc.weight",
    );
    // The bias just before a training-mode BatchNorm gets a zero gradient (PyTorch: |g| < 5e-6).
    let fc_bias = values(model.fc.bias.as_ref().unwrap().grad(&grads).unwrap());
    assert!(
        fc_bias.iter().all(|v| v.abs() < 1e-4),
        "fc.bias gradient {fc_bias:?}"
    );
    close(
        &values(model.features.beta.grad(&grads).unwrap()),
        &g("features.bias"),
        1e-3,
        "features.bias",
    );
    assert!(reference["features_weight_grad_is_none"].as_bool().unwrap());
    assert!(
        model.features.gamma.grad(&grads).is_none(),
        "the embedding BN's scale is frozen"
    );

    let r = |name: &str| floats(&reference["running"][name]);
    close(
        &values(model.bn1.running_mean.value_sync()),
        &r("bn1.running_mean"),
        1e-4,
        "bn1.running_mean",
    );
    close(
        &values(model.bn1.running_var.value_sync()),
        &r("bn1.running_var"),
        1e-4,
        "bn1.running_var",
    );
    close(
        &values(model.layer2[0].bn3.running_var.value_sync()),
        &r("layer2.0.bn3.running_var"),
        1e-4,
        "layer2.0.bn3.running_var",
    );
    close(
        &values(model.features.running_mean.value_sync()),
        &r("features.running_mean"),
        1e-4,
        "features.running_mean",
    );
    close(
        &values(model.features.running_var.value_sync()),
        &r("features.running_var"),
        1e-4,
        "features.running_var (unbiased, as PyTorch)",
    );
}
