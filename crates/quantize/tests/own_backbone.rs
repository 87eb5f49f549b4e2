//! A backbone defined here, not in `iresnet`, describes its dataflow (`iresnet::Describe`) and is
//! quantized with no code in `quantize` that knows it: the float engine computes what its Burn
//! forward computes, and the int8 model stays close.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d::Explicit;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PRelu, PReluConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use eval::{cosine, BurnEmbedder, Embedder};
use face_data::{render, SyntheticConfig};
use iresnet::{Backbone, Dataflow, Describe, Named, Op};
use quantize::{quantize, Engine, Graph, QuantizeOptions};

type B = burn::backend::Flex;
type AD = Autodiff<B>;

/// A stride-2 stem, one residual convolution, and an IResNet-style embedding.
#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    stem: Conv2d<B>,
    stem_bn: BatchNorm<B>,
    act: PRelu<B>,
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
    pre: BatchNorm<B>,
    fc: Linear<B>,
    features: BatchNorm<B>,
}

fn conv<B: Backend>(cin: usize, cout: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

impl<B: Backend> Tiny<B> {
    fn new(device: &B::Device) -> Self {
        let bn = |c| BatchNormConfig::new(c).init(device);
        Self {
            stem: conv(3, 4, 2, device),
            stem_bn: bn(4),
            act: PReluConfig::new().with_num_parameters(4).init(device),
            conv: conv(4, 4, 1, device),
            bn: bn(4),
            pre: bn(4),
            fc: LinearConfig::new(4 * 56 * 56, 8).init(device),
            features: bn(8),
        }
    }
}

impl<B: Backend> Backbone<B> for Tiny<B> {
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self
            .act
            .forward(self.stem_bn.forward(self.stem.forward(faces)));
        let x = x.clone() + self.bn.forward(self.conv.forward(x));
        let x = self.fc.forward(self.pre.forward(x).flatten::<2>(1, 3));
        self.features
            .forward(x.unsqueeze_dim::<3>(2))
            .squeeze_dim::<2>(2)
    }
    fn embedding_dim(&self) -> usize {
        8
    }
}

impl<B: Backend> Describe<B> for Tiny<B> {
    fn dataflow(&self) -> Dataflow<'_, B> {
        // PyTorch names equal to the Burn ones: this net exists only here.
        fn n<'a, M>(module: &'a M, name: &str) -> Named<'a, M> {
            Named::new(module, name, name)
        }
        let mut flow = Dataflow::default();
        let x = flow.conv(
            0,
            n(&self.stem, "stem"),
            n(&self.stem_bn, "stem_bn"),
            Some(n(&self.act, "act")),
        );
        let y = flow.conv(x, n(&self.conv, "conv"), n(&self.bn, "bn"), None);
        let sum = flow.push(Op::Add { a: x, b: y });
        flow.push(Op::Embedding {
            input: sum,
            pre: Some(n(&self.pre, "pre")),
            fc: n(&self.fc, "fc"),
            features: n(&self.features, "features"),
        });
        flow
    }
}

/// Running statistics that are not the identity: a few training-mode passes.
fn trained() -> Tiny<B> {
    let device = Default::default();
    <AD as Backend>::seed(&device, 3);
    let model = Tiny::<AD>::new(&device);
    for _ in 0..3 {
        let x = Tensor::<AD, 4>::random([4, 3, 112, 112], Distribution::Normal(0.1, 0.7), &device);
        let _ = model.embed(x);
    }
    model.valid()
}

#[test]
fn a_backbone_defined_outside_iresnet_quantizes_from_its_dataflow() {
    let model = trained();
    assert_eq!(model.plan().layers.len(), 8, "{:?}", model.plan());
    let config = SyntheticConfig::default();
    let faces: Vec<_> = (0..24)
        .map(|i| render(&config, i % 5, i, None).image)
        .collect();
    let raw: Vec<&[u8]> = faces.iter().map(|f| f.as_raw().as_slice()).collect();

    let graph = Graph::from_backbone(&model).unwrap();
    assert_eq!(graph.architecture, "custom backbone");
    let float = Engine::float(&graph).unwrap().embed(&raw[16..]).unwrap();
    let burn = BurnEmbedder::new(model, Default::default())
        .embed(&faces[16..])
        .unwrap();
    let scale = burn.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in float.iter().flatten().zip(burn.iter().flatten()) {
        assert!((a - b).abs() <= 2e-5 * scale, "{a} vs {b}");
    }

    let int8 = quantize(&graph, &raw[..16], QuantizeOptions::default()).unwrap();
    let engine = int8.engine().unwrap();
    for (q, f) in engine.embed(&raw[16..]).unwrap().iter().zip(&float) {
        let c = cosine(q, f);
        assert!(c > 0.99, "int8 against float: cosine {c}");
    }
}
