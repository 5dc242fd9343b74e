//! BNN plans on the chip (issue 12): layers with 1-bit weights and sign outputs lower
//! to the runtime's binary ops where their input holds signs, and to int8 ops with a
//! sign threshold where it does not; either way the deployed model predicts what the
//! fake-quantized BNN predicts. lenet5 on the bundled subset, trained briefly.

use anyhow::Result;
use candle_core::Device;
use sprig_compressor::compress::fold_batch_norms;
use sprig_compressor::config::ConfigList;
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::export::packed;
use sprig_compressor::models::Model;
use sprig_compressor::quant::{BnnQuantizer, Quantizer};
use sprig_compressor::train::{self, TrainConfig};
use sprig_runtime::{Encoding, Op};

/// `configs/bnn.json`: conv1 and fc3 int8, conv2, fc1 and fc2 binary (conv2 reads
/// conv1's int8 ReLU output; fc1 passes its signs to fc2 as packed bits).
const BNN: &str = r#"[
  {"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8},
  {"op_names": ["conv2", "fc1", "fc2"], "quant_types": ["weight", "output"], "quant_bits": 1}
]"#;

/// As [`BNN`], and conv1's output a sign activation too, so conv2 reads signs (and
/// passes its own through the max pool and the flatten to fc1 as packed bits).
const BNN_SIGN_INPUTS: &str = r#"[
  {"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8},
  {"op_names": ["conv1"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 8, "output": 1}},
  {"op_names": ["conv2", "fc1", "fc2"], "quant_types": ["weight", "output"], "quant_bits": 1}
]"#;

/// One epoch over `data` (training evaluates after it; a token test set keeps that cheap).
fn fit(model: &mut Model, data: &Dataset, lr: f64) -> Result<()> {
    let mut cfg = TrainConfig::new(1, 0);
    cfg.progress = false;
    cfg.batch_size = 32;
    cfg.lr = lr;
    train::train(model, data, &data.subset(10), &cfg, None)?;
    Ok(())
}

/// lenet5 trained on 2,000 bundled images, then BNN-fine-tuned under `plan`.
fn bnn_lenet5(train_set: &Dataset, plan: &str) -> Result<Model> {
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    fit(&mut model, &train_set.subset(2000), 2e-3)?;
    fold_batch_norms(&mut model)?;
    BnnQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(plan)?)?;
    fit(&mut model, &train_set.subset(1000), 5e-3)?;
    Ok(model)
}

/// The op kinds of a packed model, weighted ops with their weight encoding.
fn op_kinds(runtime: &sprig_runtime::Model<'_>) -> Vec<String> {
    runtime
        .ops()
        .filter_map(|op| match op {
            Op::Conv2d(c) => Some(format!("Conv2d/{}", c.filter.encoding.name())),
            Op::Conv2dMaxPool(p) => {
                Some(format!("Conv2dMaxPool/{}", p.conv.filter.encoding.name()))
            }
            Op::FullyConnected(f) => Some(format!("FullyConnected/{}", f.weights.encoding.name())),
            Op::BinaryConv2d(c) => Some(format!("BinaryConv2d/{}", c.filter.encoding.name())),
            Op::BinaryFullyConnected(f) => Some(format!(
                "BinaryFullyConnected/{}",
                f.weights.encoding.name()
            )),
            _ => None,
        })
        .collect()
}

/// `plan` deploys as `expected_ops` with `bits` tensors passed between binary ops as
/// packed bits, and predicts what the fake-quantized model predicts.
fn deploys(plan: &str, expected_ops: &[&str], bits: usize) -> Result<()> {
    let (train_set, test) = data::load_dir(&data::bundled_dir())?;
    let model = bnn_lenet5(&train_set, plan)?;
    let packed = packed::pack(&model.graph)?;
    let runtime = packed.model()?;
    assert_eq!(op_kinds(&runtime), expected_ops);
    let packed_bits = runtime.tensors().iter().filter(|t| t.is_bits()).count();
    assert_eq!(packed_bits, bits, "tensors stored as packed bits");
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test)?;
    eprintln!("{report}");
    assert!(
        report.fake_quant_accuracy > 0.5,
        "the BNN did not learn ({report})"
    );
    assert!(report.agreement >= 0.99, "agreement below 99 % ({report})");
    assert_eq!(
        report.simulated_exact_outputs, 1.0,
        "outputs differ from the simulated integer model ({report})"
    );
    // The bar is 0.3 % of the test set, counted in whole images: the f32 difference of
    // two accuracies lands a hair above 0.003 for exactly 3 of 1000.
    let correct = |accuracy: f32| (accuracy * report.images as f32).round() as usize;
    let gap_images =
        correct(report.deployed_accuracy).abs_diff(correct(report.fake_quant_accuracy));
    assert!(
        gap_images * 1000 <= 3 * report.images,
        "deployed accuracy {gap_images} images off the fake-quant one ({report})"
    );
    Ok(())
}

#[test]
fn bnn_plan_deploys_with_binary_fully_connected_ops() -> Result<()> {
    let packed1 = Encoding::Packed1.name();
    deploys(
        BNN,
        &[
            "Conv2dMaxPool/dense",
            &format!("Conv2dMaxPool/{packed1}"),
            &format!("BinaryFullyConnected/{packed1}"),
            &format!("BinaryFullyConnected/{packed1}"),
            "FullyConnected/dense",
        ],
        1,
    )
}

#[test]
fn sign_inputs_make_the_conv_binary_too() -> Result<()> {
    let packed1 = Encoding::Packed1.name();
    deploys(
        BNN_SIGN_INPUTS,
        &[
            "Conv2dMaxPool/dense",
            &format!("BinaryConv2d/{packed1}"),
            &format!("BinaryFullyConnected/{packed1}"),
            &format!("BinaryFullyConnected/{packed1}"),
            "FullyConnected/dense",
        ],
        4,
    )
}

/// An int8 layer cannot read a sign activation that an int8 op wrote (its 0 means +1):
/// a clear error naming the reader.
#[test]
fn int8_layer_reading_an_int8_sign_output_is_refused() -> Result<()> {
    let (train_set, _) = data::load_dir(&data::bundled_dir())?;
    let plan = r#"[
      {"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8},
      {"op_names": ["conv1"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 8, "output": 1}}
    ]"#;
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    fold_batch_norms(&mut model)?;
    BnnQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(plan)?)?;
    fit(&mut model, &train_set.subset(64), 1e-3)?;
    let Err(err) = packed::pack(&model.graph) else {
        panic!("an int8 conv2 reading conv1's int8 sign output was packed");
    };
    let err = err.to_string();
    assert!(err.contains("layer `conv2`"), "{err}");
    assert!(err.contains("reads the sign activation"), "{err}");
    Ok(())
}
