//! `total_sparsity`: one sparsity for all the layers a dict selects together, the way
//! NNI 3.x reads it (its legacy-key translation gives each such dict its own global
//! group): every weight of the group is ranked by the pruner's score, and the
//! `round(total_sparsity · N)` lowest are pruned wherever they are, so layers end up
//! with different sparsities. `max_sparsity_per_layer` caps each layer (at
//! `floor(max · n)` of its `n` weights); the weights a capped layer cannot give are
//! taken from the others, next lowest first.
//!
//! [`ConfigList::resolve`](super::ConfigList::resolve) leaves such layers' `sparsity`
//! empty; [`ConfigList::allocate_global`] fills it, once the pruner has scored the
//! weights, with `pruned / n` for each layer, so a pruner masking the `round(sparsity ·
//! n)` lowest scores of each layer prunes exactly the group's lowest.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ConfigError, ConfigList, LayerConfig};

/// `max_sparsity_per_layer`: one cap for every layer, or one per layer name (NNI 2.x).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MaxSparsity {
    All(f64),
    PerLayer(BTreeMap<String, f64>),
}

impl MaxSparsity {
    /// The cap for `layer` (1.0, no cap, for a layer the map leaves out).
    pub fn for_layer(&self, layer: &str) -> f64 {
        match self {
            MaxSparsity::All(v) => *v,
            MaxSparsity::PerLayer(map) => map.get(layer).copied().unwrap_or(1.0),
        }
    }
}

impl ConfigList {
    /// Whether any resolved layer gets its sparsity from a `total_sparsity` dict.
    pub fn has_global_sparsity(&self, layers: &[LayerConfig]) -> bool {
        layers
            .iter()
            .any(|l| self.entries[l.index].total_sparsity.is_some())
    }

    /// Fills the `sparsity` of every layer whose dict gives `total_sparsity`, from
    /// `scores(layer)`: one score per weight, lower pruned first (ties: earlier layer,
    /// then earlier position, as the per-layer pruners break them).
    pub fn allocate_global<E>(
        &self,
        layers: &mut [LayerConfig],
        mut scores: impl FnMut(&LayerConfig) -> Result<Vec<f32>, E>,
    ) -> Result<(), E>
    where
        E: From<ConfigError>,
    {
        // One group per dict, as NNI 3.x makes one global group per legacy dict.
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, layer) in layers.iter().enumerate() {
            if self.entries[layer.index].total_sparsity.is_some() {
                groups.entry(layer.index).or_default().push(i);
            }
        }
        for (dict, members) in groups {
            let entry = &self.entries[dict];
            let total = entry.total_sparsity.unwrap_or(0.0);
            let mut ranked: Vec<(f32, usize, usize)> = Vec::new();
            let mut caps = Vec::with_capacity(members.len());
            let mut sizes = Vec::with_capacity(members.len());
            let mut n_total = 0usize;
            for (m, &i) in members.iter().enumerate() {
                let s = scores(&layers[i])?;
                let cap = entry
                    .max_sparsity_per_layer
                    .as_ref()
                    .map_or(1.0, |c| c.for_layer(&layers[i].name));
                caps.push((cap * s.len() as f64).floor() as usize);
                sizes.push(s.len());
                n_total += s.len();
                ranked.extend(s.into_iter().enumerate().map(|(k, v)| (v, m, k)));
            }
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let want = ((total * n_total as f64).round() as usize).min(n_total);
            let reachable: usize = caps.iter().sum();
            if want > reachable {
                return Err(ConfigError::GlobalSparsityUnreachable {
                    file: self.source.clone(),
                    index: dict,
                    total,
                    want,
                    reachable,
                    weights: n_total,
                }
                .into());
            }
            let mut pruned = vec![0usize; members.len()];
            let mut taken = 0;
            for &(_, m, _) in &ranked {
                if taken == want {
                    break;
                }
                if pruned[m] < caps[m] {
                    pruned[m] += 1;
                    taken += 1;
                }
            }
            for (m, &i) in members.iter().enumerate() {
                layers[i].sparsity = Some(pruned[m] as f64 / sizes[m].max(1) as f64);
            }
        }
        Ok(())
    }
}
