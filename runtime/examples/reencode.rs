//! Re-encode a run folder's weights, to measure the kernels of one encoding against
//! another on the same model (`cargo xtask sim --artifacts OUT`):
//!
//! ```sh
//! cargo run -p sprig-runtime --features std --example reencode -- runs/lenet5 runs/x dense
//! ```
//!
//! Modes: an encoding's name (`dense`, `sparse-rel8`, `sparse-rel4`, `packed4`,
//! `packed2`, `packed1`: every conv and fully connected op in that encoding, and
//! depthwise ops too for the dense and packed ones; packing fails on weights the width
//! cannot hold), or `empty` (every conv and fully connected weight zero, stored
//! sparse: what is left is the cost of everything but the multiply-accumulates).
//! Writes `model.sprig` and a
//! `vectors.bin` whose expected outputs come from the host runtime on the new model.
//! The old weight bytes stay in the data section, unreferenced (sizes are not the
//! point here).

use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::vectors::{write_vectors, Vectors};
use sprig_runtime::{Encoding, Model, Op, Weights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, mode] = args.as_slice() else {
        return Err("usage: reencode IN_DIR OUT_DIR ENCODING|empty".into());
    };
    let (encoding, empty) = match mode.as_str() {
        "empty" => (Encoding::SparseRel8, true),
        name => match Encoding::ALL.into_iter().find(|e| e.name() == name) {
            Some(e) => (e, false),
            None => return Err(format!("unknown mode {name}").into()),
        },
    };
    let input = std::path::Path::new(input);
    let blob = std::fs::read(input.join("model.sprig"))?;
    let model = Model::from_bytes(&blob)?;
    let mut builder = BlobBuilder::new();
    builder.push_bytes(model.data())?; // at offset 0: every old reference stays valid
    let mut ops: Vec<Op> = model.ops().collect();
    for layer in model.layer_weights()? {
        let sparse = matches!(encoding, Encoding::SparseRel8 | Encoding::SparseRel4);
        if layer.kind == sprig_runtime::OpKind::DepthwiseConv2d && sparse {
            continue;
        }
        let values = if empty {
            vec![0; layer.count()]
        } else {
            layer.dense.clone()
        };
        let weights = builder.push_weights_as(&values, layer.rows, encoding)?;
        set_weights(&mut ops[layer.op], weights);
    }
    let graph = GraphDef {
        tensors: model.tensors().to_vec(),
        ops,
        input: model.graph().input,
        output: model.graph().output,
        arena_size: model.graph().arena_size,
    };
    let new_blob = builder.finish(&graph)?;
    let new_model = Model::from_bytes(&new_blob)?;
    let vectors_bytes = std::fs::read(input.join("vectors.bin"))?;
    let vectors = Vectors::parse(&vectors_bytes)?;
    let mut arena = vec![0u8; new_model.arena_size()];
    let mut records = Vec::new();
    for v in vectors.iter() {
        let mut out = vec![0i8; new_model.output_len()];
        new_model.run(&mut arena, v.input, &mut out)?;
        records.push((v.label, v.input.to_vec(), out));
    }
    let output = std::path::Path::new(output);
    std::fs::create_dir_all(output)?;
    std::fs::write(output.join("model.sprig"), &new_blob)?;
    std::fs::write(
        output.join("vectors.bin"),
        write_vectors(new_model.input_len(), new_model.output_len(), &records)?,
    )?;
    println!("{}: {} bytes, {mode}", output.display(), new_blob.len());
    Ok(())
}

fn set_weights(op: &mut Op, w: Weights) {
    match op {
        Op::Conv2d(p) => p.filter = w,
        Op::DepthwiseConv2d(p) => p.filter = w,
        Op::FullyConnected(p) => p.weights = w,
        _ => {}
    }
}
