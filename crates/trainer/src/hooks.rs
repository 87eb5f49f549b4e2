//! Where later features plug into the loop without forking it: extra loss terms computed from
//! the batch and the model's outputs (distillation, regularisers), and head updates made outside
//! the optimiser (Partial FC's row-sparse SGD).

use arcface_loss::{HeadOutput, MarginFc, SampledSgd};
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    Tensor, TensorData,
};
use face_data::Batch;

use crate::error::TrainError;

/// What a [`LossTerm`] sees of one batch (of one replica's shard in data-parallel runs).
pub struct StepView<'a, B: AutodiffBackend, M> {
    /// The optimiser step this batch belongs to.
    pub step: u64,
    /// The batch as the loader made it (images after augmentation, labels, dataset indices).
    pub batch: &'a Batch,
    /// The batch as the backbone got it, `[N, C, H, W]`.
    pub inputs: &'a Tensor<B, 4>,
    /// The backbone being trained (a teacher or a frozen old model lives in the term itself).
    pub backbone: &'a M,
    /// The backbone's embeddings, f32 `[N, D]`, in the autodiff graph.
    pub embeddings: &'a Tensor<B, 2>,
    /// The margin head's output for the batch (loss, logits, cosines).
    pub head: &'a HeadOutput<B>,
    /// Where the batch lives.
    pub device: &'a B::Device,
}

/// An extra loss term added to the margin head's loss before the backward pass.
pub trait LossTerm<B: AutodiffBackend, M>: Send + Sync {
    /// The name its value is logged under (`terms` in `metrics.jsonl`).
    fn name(&self) -> &str;
    /// The term for this batch, already weighted, shape `[1]`, in the batch's autodiff graph.
    fn loss(&self, view: &StepView<'_, B, M>) -> Result<Tensor<B, 1>, TrainError>;
}

/// An evaluation of its own at every evaluation of the run, on the inference-mode backbone and
/// head (`B` is the inner backend): continual learning's old- and new-identity accuracies. Its
/// values are logged under `evals` in `metrics.jsonl` and end up in the report.
pub trait EvalHook<B: Backend, M, H>: Send {
    /// Named values for this evaluation.
    fn evaluate(
        &self,
        backbone: &M,
        head: &H,
        step: u64,
        device: &B::Device,
    ) -> Result<Vec<(String, f64)>, TrainError>;
}

/// An update of the head made after each backward pass outside the optimiser, with state
/// that checkpoints keep.
pub trait HeadUpdate<B: AutodiffBackend, H>: Send {
    /// The updated head, from this batch's gradients and the head's output.
    fn step(&mut self, head: &H, grads: &B::Gradients, out: &HeadOutput<B>, lr: f64) -> H;
    /// The state to checkpoint, if it has any yet.
    fn state(&self) -> Option<Vec<u8>>;
    /// Continues from [`state`](Self::state)'s bytes.
    fn load_state(&mut self, bytes: &[u8], device: &B::Device) -> Result<(), String>;
}

/// Partial FC: only the sampled centres move (see `arcface_loss::SampledSgd`).
impl<B: AutodiffBackend> HeadUpdate<B, MarginFc<B>> for SampledSgd<B::InnerBackend> {
    fn step(
        &mut self,
        head: &MarginFc<B>,
        grads: &B::Gradients,
        out: &HeadOutput<B>,
        lr: f64,
    ) -> MarginFc<B> {
        head.clone()
            .step_sampled(grads, &out.sample, &out.centres, self, lr)
    }

    fn state(&self) -> Option<Vec<u8>> {
        self.velocity().map(matrix_bytes)
    }

    fn load_state(&mut self, bytes: &[u8], device: &B::Device) -> Result<(), String> {
        let velocity = matrix_from_bytes::<B::InnerBackend>(bytes, device)
            .ok_or("the velocity's size does not match its shape")?;
        *self = self.clone().with_velocity(Some(velocity));
        Ok(())
    }
}

/// `[rows, cols]` as two little-endian u64 and the f32 values.
fn matrix_bytes<B: Backend>(m: &Tensor<B, 2>) -> Vec<u8> {
    let [rows, cols] = m.dims();
    let values = m
        .to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 matrix");
    let mut bytes = Vec::with_capacity(16 + 4 * values.len());
    bytes.extend((rows as u64).to_le_bytes());
    bytes.extend((cols as u64).to_le_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

fn matrix_from_bytes<B: Backend>(bytes: &[u8], device: &B::Device) -> Option<Tensor<B, 2>> {
    let rows = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let cols = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let body = bytes.get(16..)?;
    if body.len() != rows.checked_mul(cols)?.checked_mul(4)? {
        return None;
    }
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Some(Tensor::from_data(
        TensorData::new(values, [rows, cols]),
        device,
    ))
}
