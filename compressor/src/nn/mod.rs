//! Layers in candle-nn style (one file each) and the graph that ties them together.

mod activation;
mod add;
mod batch_norm;
mod conv;
mod cpu;
mod dependencies;
mod flatten;
mod graph;
mod layer;
mod linear;
mod op_type;
mod pool;
mod quant_plan;
mod rewrite;
mod shapes;

pub use activation::{ReLU, ReLU6};
pub use add::Add;
pub use batch_norm::{BatchNorm2d, BATCH_NORM_EPS};
pub use conv::{Conv2d, Conv2dConfig};
pub use dependencies::{channel_groups, ChannelGroup, Pin, Reader};
pub use flatten::Flatten;
pub use graph::{Graph, Node, Source};
pub use layer::{Layer, BUFFERS};
pub use linear::Linear;
pub use op_type::{OpType, UnknownOpType};
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d, Pool2dConfig};
pub use quant_plan::{
    bypassed_activation, implicit_output_grids, quant_plan, resolve_grids, Grids, InputGrid,
    NodeQuant, OutputGrid, QuantPlan,
};
pub use rewrite::{Rewrite, Side};
pub use shapes::{infer_shapes, node_macs, weight_reuse};
