//! Each weighted layer of a packed model as stored: its encoding, bytes and density,
//! as `cargo xtask compress` and `cargo xtask size` print it.

use sprig_runtime::Model;

use crate::{Error, Result};

/// The table of `model`'s weighted ops, one line each, named by `names` (the graph's
/// layer names, in op order; ops past the end are named by index), with a total.
pub fn weights_table(model: &Model<'_>, names: &[String]) -> Result<String> {
    let layers = model.layer_weights().map_err(|e| Error::Export {
        path: "model.sprig".into(),
        message: format!("cannot read the weights back: {e}"),
    })?;
    let mut out = format!(
        "{:<12} {:<20} {:<12} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
        "layer", "op", "encoding", "weights", "nonzero", "density", "bytes", "/dense"
    );
    let (mut weights, mut nonzero, mut bytes) = (0, 0, 0);
    for (i, l) in layers.iter().enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("op {}", l.op));
        out += &format!(
            "{:<12} {:<20} {:<12} {:>8} {:>8} {:>7.1}% {:>8} {:>7.3}\n",
            name,
            format!("{:?}", l.kind),
            l.encoding.name(),
            l.count(),
            l.nonzero(),
            100.0 * l.density(),
            l.bytes,
            l.bytes as f64 / l.count().max(1) as f64
        );
        weights += l.count();
        nonzero += l.nonzero();
        bytes += l.bytes;
    }
    out += &format!(
        "{:<12} {:<20} {:<12} {:>8} {:>8} {:>7.1}% {:>8} {:>7.3}\n",
        "total",
        "",
        "",
        weights,
        nonzero,
        100.0 * nonzero as f64 / weights.max(1) as f64,
        bytes,
        bytes as f64 / weights.max(1) as f64
    );
    Ok(out)
}
