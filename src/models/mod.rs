//! The hierarchy's two CNNs: their architectures as configuration, their
//! XLA programs (train / eval / predict), initialization, a session that
//! keeps a model's parameters on its devices while it trains, and trained
//! models loaded from checkpoints for inference.

mod architecture;
mod inference;
mod init;
pub mod kernel_choice;
mod programs;
mod session;

pub use crate::graph::{Init, ParamSpec};
pub use architecture::{Architecture, ConvChoice, CpuKernelMode, CpuKernels, ModelKind, Network};
pub use inference::{CheckpointSource, InferenceError, InferenceModel, InferenceOptions};
pub use init::init_params;
pub use kernel_choice::{ChoiceSource, KernelCache, KernelChoice};
pub use programs::{BuiltProgram, Precision, ProgramSpec};
pub use session::{BatchUploader, CompileTimes, DeviceBatch, EvalTotals, SessionConfig, SessionError, StepMetrics, TrainSession};
