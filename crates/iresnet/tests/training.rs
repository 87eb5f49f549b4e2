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
    let downsample = model.layer4[0].downsample.as_ref().unwrap();
    // (PyTorch name, our gradient); Burn stores Linear weights as [in, out], PyTorch as [out, in].
    let gradients = [
        (
            "conv1.weight",
            values(model.conv1.weight.grad(&grads).unwrap()),
        ),
        ("bn1.weight", values(model.bn1.gamma.grad(&grads).unwrap())),
        (
            "prelu.weight",
            values(model.prelu.alpha.grad(&grads).unwrap()),
        ),
        (
            "layer1.0.bn1.bias",
            values(model.layer1[0].bn1.beta.grad(&grads).unwrap()),
        ),
        (
            "layer4.0.conv2.weight",
            values(model.layer4[0].conv2.weight.grad(&grads).unwrap()),
        ),
        (
            "layer4.0.downsample.0.weight",
            values(downsample.conv.weight.grad(&grads).unwrap()),
        ),
        (
            "fc.weight",
            values(model.fc.weight.grad(&grads).unwrap().transpose()),
        ),
        (
            "features.bias",
            values(model.features.beta.grad(&grads).unwrap()),
        ),
    ];
    for (name, ours) in gradients {
        close(&ours, &floats(&reference["grads"][name]), 1e-3, name);
    }
    // The bias just before a training-mode BatchNorm gets a zero gradient (PyTorch: |g| < 5e-6).
    let fc_bias = values(model.fc.bias.as_ref().unwrap().grad(&grads).unwrap());
    assert!(
        fc_bias.iter().all(|v| v.abs() < 1e-4),
        "fc.bias gradient {fc_bias:?}"
    );
    assert!(reference["features_weight_grad_is_none"].as_bool().unwrap());
    assert!(
        model.features.gamma.grad(&grads).is_none(),
        "the embedding BN's scale is frozen"
    );

    // Read with value_sync: the step's updates are pending until then.
    let running = [
        ("bn1.running_mean", model.bn1.running_mean.value_sync()),
        ("bn1.running_var", model.bn1.running_var.value_sync()),
        (
            "layer2.0.bn3.running_var",
            model.layer2[0].bn3.running_var.value_sync(),
        ),
        (
            "features.running_mean",
            model.features.running_mean.value_sync(),
        ),
        // Unbiased batch variance, as PyTorch keeps it (Burn's BatchNorm keeps the biased one).
        (
            "features.running_var",
            model.features.running_var.value_sync(),
        ),
    ];
    for (name, ours) in running {
        close(
            &values(ours),
            &floats(&reference["running"][name]),
            1e-4,
            name,
        );
    }
}
