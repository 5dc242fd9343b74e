//! The compression job: plans, batch-norm folding, speedup, the pipeline, its summary
//! and its chart.

mod fold;
mod options;
mod pipeline;
mod plan;
mod pruning;
mod report;
mod speedup;
mod summary;

pub use fold::fold_batch_norms;
pub use options::CompressOptions;
pub use pipeline::{load_train, run};
pub use plan::{Plan, QuantizerKind, Stage, DEFAULT_PLAN, QUANTIZERS};
pub use report::{render_report, write_report, REPORT_FILE};
pub use speedup::{
    align_masks, max_output_change, parameter_count, speed_up, ChannelChange, SpeedupReport,
};
pub use summary::{layer_rows, quantized_outputs, LayerRow, QuantizedOutput, RoundReport, Summary};
