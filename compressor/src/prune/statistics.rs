//! The statistics pass of activation-based pruners: eval-mode forward passes over training
//! batches, each node's output handed to the pruner before it computes its masks.

use crate::data::{Batcher, Dataset, Order};
use crate::models::Model;
use crate::Result;

use super::Pruner;

/// Runs `pruner.statistics_batches()` batches of `train_set` (in the seeded shuffled
/// order of epoch 0) through `model`, calling [`Pruner::observe`] for every node. Weights
/// and running statistics are not touched. Returns the number of images observed.
pub fn collect_statistics(
    pruner: &mut dyn Pruner,
    model: &Model,
    train_set: &Dataset,
    batch_size: usize,
    seed: u64,
) -> Result<usize> {
    let batches = pruner.statistics_batches();
    let mut images = 0;
    if batches == 0 {
        return Ok(images);
    }
    let order = Order::Shuffled { seed, epoch: 0 };
    for batch in Batcher::new(train_set, batch_size, order, &model.device).take(batches) {
        let batch = batch?;
        let graph = &model.graph;
        let mut failure = None;
        graph.forward_observed(&batch.images, false, &mut |node, output| {
            if failure.is_none() {
                failure = pruner.observe(graph, node, output).err();
            }
            Ok(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        images += batch.len;
    }
    Ok(images)
}
