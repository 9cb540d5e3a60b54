//! Training: everything a run writes while it trains.
//!
//! - [`tensorboard`]: TensorBoard event files (scalars, restart markers);
//! - [`checkpoint`]: atomic, rotating safetensors checkpoints;
//! - [`trainer`]: the training loop of one run.
//!
//! The run's record and training curve formats live in [`crate::records`];
//! this module must not define file formats that the report reads.

pub mod checkpoint;
pub mod tensorboard;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointDir, CheckpointError};
pub use tensorboard::{EventWriter, TensorBoardError};
pub use trainer::{Interrupted, TrainOptions, default_run_dir, train};
