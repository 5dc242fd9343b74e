//! `calibration.json`: per quantized layer, the bits, scales, zero points and tracked
//! ranges the quantizer settled on; what a deployment (or a reviewer) needs to know.
//! `input` is the graph input's grid with its `source` (`"declared"`: the data
//! pipeline's, or `"<layer>.input"`: that layer's tracked range); a layer with
//! `"implicit": true` was named by no dict and quantized by the plan's rule
//! (`nn::quant_plan`); `"binary_output": true` marks a sign activation (BNN's 1-bit
//! outputs: ±1 of the pre-activation, replacing a fused ReLU).

use std::path::Path;

use serde_json::{json, Value};

use super::write_atomic;
use crate::config::QuantType;
use crate::nn::{quant_plan, resolve_grids, Graph, InputGrid};
use crate::Result;

/// The calibration document for `graph` (an empty layer map when no quantizer is bound).
pub fn calibration_json(graph: &Graph) -> Result<Value> {
    let Some(binding) = graph.quant() else {
        return Ok(json!({ "quantizer": null, "input": null, "layers": {} }));
    };
    let grids = resolve_grids(graph);
    let qparams = |q: Option<crate::quant::QParams>| {
        q.map(|q| json!({ "scale": q.scale, "zero_point": q.zero_point, "qmin": q.qmin, "qmax": q.qmax }))
    };
    let mut layers = serde_json::Map::new();
    for (name, layer) in binding.layers() {
        let state = layer.state();
        // The grid the layer reads: its own input parameters for the graph input,
        // otherwise its producer's (see `nn::quant_plan`).
        let input_grid = graph
            .node(name)
            .map(|n| grids.of(n.inputs[0]))
            .unwrap_or(state.input_qparams);
        // The weight's integers as the quantizer gives them to every exporter; a
        // quantizer without an integer form: the scales its hook recorded.
        let weight = match graph.weight_integers(name)? {
            Some(q) => json!({
                "scheme": "symmetric_per_channel", "bits": q.bits, "scales": q.scales, "zero_point": 0
            }),
            None if !state.weight_scales.is_empty() => json!({
                "scheme": "quantizer_defined", "scales": state.weight_scales
            }),
            None => Value::Null,
        };
        let bits: serde_json::Map<String, Value> =
            [QuantType::Weight, QuantType::Input, QuantType::Output]
                .into_iter()
                .filter_map(|t| {
                    layer
                        .config
                        .bits(t)
                        .filter(|_| layer.config.quantizes(t))
                        .map(|b| (quant_type_name(t), json!(b)))
                })
                .collect();
        layers.insert(
            name.clone(),
            json!({
                "op_type": layer.config.op_type.as_str(),
                "bits": bits,
                "weight": weight,
                "input": qparams(input_grid),
                "output": qparams(state.output_qparams),
                // A sign activation of the pre-activation (BNN's 1-bit outputs).
                "binary_output": binding.binary_output(name),
                "input_range": state.input_range.map(|r| json!([r.min, r.max])),
                "output_range": state.output_range.map(|r| json!([r.min, r.max])),
                "training_steps": state.steps,
                "implicit": layer.is_implicit(),
            }),
        );
    }
    let input_source = match quant_plan(graph).input {
        InputGrid::Float => Value::Null,
        InputGrid::Hook(i) => json!(format!("{}.input", graph.nodes()[i].name)),
        InputGrid::Declared(_) => json!("declared"),
    };
    let mut input = qparams(grids.input).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut input {
        map.insert("source".into(), input_source);
    }
    Ok(json!({ "quantizer": binding.quantizer().name(), "input": input, "layers": layers }))
}

fn quant_type_name(t: QuantType) -> String {
    match t {
        QuantType::Weight => "weight",
        QuantType::Input => "input",
        QuantType::Output => "output",
    }
    .to_string()
}

/// Writes [`calibration_json`] to `path`.
pub fn write_calibration(graph: &Graph, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&calibration_json(graph)?).map_err(|e| {
        crate::Error::Export {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    write_atomic(path, text.as_bytes())
}
