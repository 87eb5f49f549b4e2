//! `[distill]`: a teacher's knowledge as an extra [`LossTerm`] of the student's run (the losses
//! are `distill`'s). The teacher runs without gradients on the batch the student sees (online
//! distillation: the same augmentation), on the first device.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::{backend::AutodiffBackend, Tensor};
use distill::{embedding_loss, logit_loss, relational_loss, DistillConfig};
use iresnet::{AnyBackbone, Backbone, ConvBackend};

use crate::error::TrainError;
use crate::hooks::{LossTerm, StepView};

/// The teacher, and its head's class centres when it came from a training run.
pub struct Teacher<B: ConvBackend> {
    /// The teacher's backbone (inference mode).
    pub backbone: AnyBackbone<B>,
    /// `[classes, D]`, when the teacher is a run folder.
    pub centres: Option<Tensor<B, 2>>,
}

/// Loads the teacher `path` names: a run folder (its `config.toml` and newest checkpoint) or a
/// model file.
pub fn load_teacher<B: ConvBackend>(
    path: &Path,
    device: &B::Device,
) -> Result<Teacher<B>, TrainError> {
    if !path.is_dir() {
        let backbone = iresnet::import::load_any::<B>(path, device)?;
        return Ok(Teacher {
            backbone,
            centres: None,
        });
    }
    let run = crate::source::load_run::<burn::backend::Autodiff<B>>(path, device)?;
    let model = run.model.valid();
    Ok(Teacher {
        centres: Some(model.head.centres.val()),
        backbone: model.backbone,
    })
}

/// The `distill` loss term: the configured mix of embedding, logit and relational losses.
pub struct DistillTerm<B: ConvBackend> {
    teacher: Teacher<B>,
    config: DistillConfig,
}

impl<B: ConvBackend> DistillTerm<B> {
    /// A term distilling `teacher` with `config`'s weights; refuses what cannot work (a logit
    /// term without the teacher's head, embeddings of different sizes).
    pub fn new(
        teacher: Teacher<B>,
        config: DistillConfig,
        student_dim: usize,
    ) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Other)?;
        let teacher_dim = teacher.backbone.embedding_dim();
        if (config.embedding > 0.0 || config.logit > 0.0) && teacher_dim != student_dim {
            return Err(TrainError::Other(format!(
                "distill: the teacher's embeddings have {teacher_dim} values and the student's {student_dim}; \
                 the embedding and logit terms compare them directly (use the relational term alone, or equal sizes)"
            )));
        }
        if config.logit > 0.0 && teacher.centres.is_none() {
            return Err(TrainError::Other(
                "distill.logit needs the teacher's class centres: name the teacher's training run folder, not a model file".into(),
            ));
        }
        Ok(Self { teacher, config })
    }
}

impl<AB, M> LossTerm<AB, M> for DistillTerm<AB::InnerBackend>
where
    AB: AutodiffBackend,
    AB::InnerBackend: ConvBackend,
{
    fn name(&self) -> &str {
        "distill"
    }

    fn loss(&self, view: &StepView<'_, AB, M>) -> Result<Tensor<AB, 1>, TrainError> {
        let c = &self.config;
        let faces = view.inputs.clone().inner();
        let teacher = Tensor::<AB, 2>::from_inner(self.teacher.backbone.embed(faces));
        let student = view.embeddings.clone();
        let mut total = Tensor::<AB, 1>::zeros([1], view.device);
        if c.embedding > 0.0 {
            total = total
                + embedding_loss(student.clone(), teacher.clone(), c.distance)
                    .mul_scalar(c.embedding);
        }
        if let (true, Some(centres)) = (c.logit > 0.0, &self.teacher.centres) {
            let centres = Tensor::<AB, 2>::from_inner(centres.clone());
            total = total
                + logit_loss(
                    student.clone(),
                    teacher.clone(),
                    centres,
                    c.scale,
                    c.temperature,
                )
                .mul_scalar(c.logit);
        }
        if c.relational > 0.0 {
            total = total + relational_loss(student, teacher).mul_scalar(c.relational);
        }
        Ok(total)
    }
}
