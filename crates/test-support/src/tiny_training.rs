//! The smallest training run that exercises the whole loop in seconds (a 4-16 channel IResNet,
//! 6 synthetic identities x 4 images, batches of 8, verification on 10 + 10 held-out pairs, no
//! early stopping), shared by the trainer's and the CLI's tests.

/// The tiny run's configuration; `trainer::train` takes the output folder beside it.
pub fn tiny_training() -> trainer::TrainConfig {
    let mut config = trainer::TrainConfig {
        epochs: 2.0,
        time_limit_secs: 0,
        backbone: iresnet::BackboneConfig::IResNet(
            iresnet::IResNetConfig::new([1, 1, 1, 1])
                .with_widths([4, 8, 8, 16])
                .with_embedding_dim(16),
        ),
        data: trainer::DataSource::Synthetic(face_data::SyntheticConfig {
            identities: 6,
            per_identity: 4,
            held_out: 10,
            ..Default::default()
        }),
        loader: face_data::LoaderConfig {
            batch_size: 8,
            ..Default::default()
        },
        log_every: 1,
        ..Default::default()
    };
    config.eval.every_steps = 2;
    config.eval.pairs = 10;
    config.early_stopping.metric = trainer::StopMetric::Off;
    config
}
