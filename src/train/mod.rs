//! Training: everything a run writes while it trains.
//!
//! - [`trainer`]: the training loop of one run (when to log, evaluate,
//!   checkpoint);
//! - [`run_writer`]: the one writer of a run folder (record, curve, events,
//!   checkpoints, clock);
//! - [`step_clock`]: device and input time of each step;
//! - [`tensorboard`]: TensorBoard event files (scalars, restart markers).
//!
//! Checkpoints (read by inference and evaluation too) live below all three
//! in [`crate::checkpoint`].
//!
//! The run's record and training curve formats live in [`crate::records`];
//! this module must not define file formats that the report reads.

pub mod run_writer;
pub mod step_clock;
pub mod tensorboard;
pub mod trainer;

pub use run_writer::{RunClock, RunWriter};
pub use tensorboard::{EventWriter, TensorBoardError};
pub use trainer::{Halt, Interrupted, TrainOptions, platform_of, train};
