//! Channel dependencies: which tensors of a graph share their channels, so that a channel
//! can only be removed from all of them at once.
//!
//! Layers that work channel by channel join their input and output into one group: batch
//! norm, ReLU/ReLU6, pooling, a depthwise conv (its filter `c` reads channel `c` only) and
//! Flatten (channel `c` becomes the `H·W` columns `c·H·W ..` of its output, PyTorch's
//! channel-major order). A residual `Add` joins both inputs and its output. A dense conv
//! or Linear starts a new group with its filters (rows) and ends its input's group with
//! its weight columns.

use super::{infer_shapes, Graph, Layer, Source};

/// Why a group's channels cannot be removed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The group holds the graph input.
    GraphInput,
    /// The group holds the graph output.
    GraphOutput,
    /// A conv with groups (not depthwise) writes or reads it; a cut would break its groups.
    GroupedConv(usize),
}

/// A node reading a group's channels through its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    pub node: usize,
    /// Input columns per channel: 1 for a conv, `H·W` for a Linear after Flatten.
    pub width: usize,
}

/// Tensors whose channels are one: channel `c` of every member is removed or kept alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    pub channels: usize,
    /// Nodes whose output belongs to the group, in graph order.
    pub members: Vec<usize>,
    /// Members that compute the channels from other channels (dense convs and Linears:
    /// channel `c` is filter `c`).
    pub producers: Vec<usize>,
    /// Members with one parameter set per channel (batch norms, depthwise convs).
    pub channelwise: Vec<usize>,
    /// Nodes outside the group that read it with their weight.
    pub readers: Vec<Reader>,
    pub pins: Vec<Pin>,
}

impl ChannelGroup {
    /// Whether some channels of the group could be removed.
    pub fn can_shrink(&self) -> bool {
        self.pins.is_empty()
    }
}

/// The channel groups of `graph`, ordered by their first tensor (the graph input, then
/// node outputs in graph order).
pub fn channel_groups(graph: &Graph) -> Vec<ChannelGroup> {
    let nodes = graph.nodes();
    let shapes = infer_shapes(graph);
    // Tensor 0 is the graph input, tensor i + 1 node i's output.
    let tensor = |s: Source| match s {
        Source::Input => 0,
        Source::Node(j) => j + 1,
    };
    let shape = |t: usize| match t {
        0 => graph.input_shape().to_vec(),
        t => shapes[t - 1].clone(),
    };
    let mut sets = DisjointSets::new(nodes.len() + 1);
    // Elements per channel of each tensor (1 but after Flatten).
    let mut width = vec![1usize; nodes.len() + 1];
    for (i, node) in nodes.iter().enumerate() {
        let (out, input) = (i + 1, tensor(node.inputs[0]));
        match &node.layer {
            Layer::Conv2d(c) if !c.config().is_depthwise() => continue,
            Layer::Linear(_) => continue,
            Layer::Flatten(_) => {
                width[out] = width[input] * shape(input)[1..].iter().product::<usize>();
            }
            _ => width[out] = width[input],
        }
        for s in &node.inputs {
            sets.join(out, tensor(*s));
        }
    }

    let mut groups: Vec<(usize, ChannelGroup)> = Vec::new();
    let mut group_of = |t: usize, groups: &mut Vec<(usize, ChannelGroup)>| -> usize {
        let root = sets.root(t);
        groups
            .iter()
            .position(|(r, _)| *r == root)
            .unwrap_or_else(|| {
                groups.push((
                    root,
                    ChannelGroup {
                        channels: shape(t)[0] / width[t],
                        members: Vec::new(),
                        producers: Vec::new(),
                        channelwise: Vec::new(),
                        readers: Vec::new(),
                        pins: Vec::new(),
                    },
                ));
                groups.len() - 1
            })
    };
    let input = group_of(0, &mut groups);
    groups[input].1.pins.push(Pin::GraphInput);
    for (i, node) in nodes.iter().enumerate() {
        let g = group_of(i + 1, &mut groups);
        groups[g].1.members.push(i);
        match &node.layer {
            Layer::Conv2d(c) if c.config().is_depthwise() => groups[g].1.channelwise.push(i),
            Layer::BatchNorm2d(_) => groups[g].1.channelwise.push(i),
            Layer::Conv2d(_) | Layer::Linear(_) => {
                groups[g].1.producers.push(i);
                let read = tensor(node.inputs[0]);
                let r = group_of(read, &mut groups);
                groups[r].1.readers.push(Reader {
                    node: i,
                    width: width[read],
                });
                if matches!(&node.layer, Layer::Conv2d(c) if c.config().groups > 1) {
                    groups[g].1.pins.push(Pin::GroupedConv(i));
                    groups[r].1.pins.push(Pin::GroupedConv(i));
                }
            }
            _ => {}
        }
    }
    if !nodes.is_empty() {
        let output = group_of(nodes.len(), &mut groups);
        groups[output].1.pins.push(Pin::GraphOutput);
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Union-find over tensor ids.
struct DisjointSets(Vec<usize>);

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }
    fn root(&mut self, mut t: usize) -> usize {
        while self.0[t] != t {
            self.0[t] = self.0[self.0[t]];
            t = self.0[t];
        }
        t
    }
    /// Joins two sets under the smaller root, so a group's root is its first tensor.
    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        let (low, high) = (a.min(b), a.max(b));
        self.0[high] = low;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::models::Model;

    fn names(graph: &Graph, nodes: &[usize]) -> Vec<String> {
        nodes
            .iter()
            .map(|&i| graph.nodes()[i].name.clone())
            .collect()
    }

    fn group_of<'g>(groups: &'g [ChannelGroup], graph: &Graph, member: &str) -> &'g ChannelGroup {
        groups
            .iter()
            .find(|g| names(graph, &g.members).iter().any(|m| m == member))
            .unwrap()
    }

    #[test]
    fn lenet5_flatten_maps_each_channel_to_25_columns() {
        let model = Model::new("lenet5", 10, &Device::Cpu, 0).unwrap();
        let g = &model.graph;
        let groups = channel_groups(g);
        let conv2 = group_of(&groups, g, "conv2");
        assert_eq!(
            names(g, &conv2.members),
            ["conv2", "relu2", "pool2", "flatten"]
        );
        assert_eq!(conv2.channels, 16);
        assert_eq!(names(g, &conv2.producers), ["conv2"]);
        let fc1 = g.nodes().iter().position(|n| n.name == "fc1").unwrap();
        assert_eq!(
            conv2.readers,
            [Reader {
                node: fc1,
                width: 25
            }]
        );
        assert!(conv2.can_shrink());
        let conv1 = group_of(&groups, g, "conv1");
        assert_eq!(conv1.readers.len(), 1);
        assert_eq!(conv1.readers[0].width, 1);
        assert_eq!(groups[0].pins, [Pin::GraphInput]);
        assert_eq!(group_of(&groups, g, "fc3").pins, [Pin::GraphOutput]);
        // input, conv1, conv2, fc1, fc2, fc3
        assert_eq!(groups.len(), 6);
    }

    #[test]
    fn resnet8_adds_join_their_producers() {
        let model = Model::new("resnet8", 10, &Device::Cpu, 0).unwrap();
        let g = &model.graph;
        let groups = channel_groups(g);
        // The identity shortcut: the stem and stack 1's second conv write one tensor.
        let stem = group_of(&groups, g, "stack1.add");
        assert_eq!(
            names(g, &stem.producers),
            ["stem.conv", "stack1.block2.conv"]
        );
        assert_eq!(names(g, &stem.channelwise), ["stem.bn", "stack1.block2.bn"]);
        assert_eq!(
            names(g, &stem.readers.iter().map(|r| r.node).collect::<Vec<_>>()),
            [
                "stack1.block1.conv",
                "stack2.block1.conv",
                "stack2.shortcut.conv"
            ]
        );
        // A projection shortcut is a producer of the sum like the block's conv.
        let stack2 = group_of(&groups, g, "stack2.add");
        assert_eq!(
            names(g, &stack2.producers),
            ["stack2.block2.conv", "stack2.shortcut.conv"]
        );
        assert_eq!(stack2.channels, 32);
        // The last sum reaches the classifier through pool and flatten, one column each.
        let last = group_of(&groups, g, "stack3.add");
        assert_eq!(last.readers.len(), 1);
        assert_eq!(last.readers[0].width, 1);
    }

    #[test]
    fn dscnn_depthwise_convs_follow_their_input() {
        let model = Model::new("dscnn", 10, &Device::Cpu, 0).unwrap();
        let g = &model.graph;
        let groups = channel_groups(g);
        let stem = group_of(&groups, g, "stem.conv");
        assert_eq!(names(g, &stem.producers), ["stem.conv"]);
        assert_eq!(
            names(g, &stem.channelwise),
            ["stem.bn", "block1.dw.conv", "block1.dw.bn"]
        );
        assert_eq!(
            names(g, &stem.readers.iter().map(|r| r.node).collect::<Vec<_>>()),
            ["block1.pw.conv"]
        );
        assert!(stem.can_shrink());
    }

    #[test]
    fn grouped_convs_pin_both_sides() {
        use candle_nn::{VarBuilder, VarMap};

        use crate::nn::{Conv2d, Conv2dConfig, ReLU};
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
        let mut g = Graph::new([1, 8, 8]);
        let a = Conv2d::new(Conv2dConfig::new(1, 4, 3), vb.pp("a")).unwrap();
        let x = g.push("a", Layer::Conv2d(a), &[Source::Input]);
        let x = g.push("relu", Layer::ReLU(ReLU), &[x]);
        let b = Conv2d::new(Conv2dConfig::new(4, 4, 3).groups(2), vb.pp("b")).unwrap();
        let x = g.push("b", Layer::Conv2d(b), &[x]);
        let c = Conv2d::new(Conv2dConfig::new(4, 2, 1), vb.pp("c")).unwrap();
        g.push("c", Layer::Conv2d(c), &[x]);
        let groups = channel_groups(&g);
        assert_eq!(group_of(&groups, &g, "a").pins, [Pin::GroupedConv(2)]);
        assert_eq!(group_of(&groups, &g, "b").pins, [Pin::GroupedConv(2)]);
    }
}
