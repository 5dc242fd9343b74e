//! Knowledge distillation (a plan's `distill`): the plan key is read from JSON, TOML and
//! YAML and bad values are refused naming the file and the key; the teacher is frozen;
//! a distilled plan runs end to end on the bundled subset through both fine-tunes and
//! reports its teacher; α = 0 trains exactly as the plain plan does.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use sprig_compressor::compress::{self, CompressOptions, Plan, Summary};
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::train::{DistillSpec, Distiller, TeacherSource};

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

const LEVEL_QAT: &str = r#"{
  "pruner": { "algorithm": "LevelPruner",
              "config_list": [{ "sparsity": 0.5, "op_types": ["default"] }] },
  "quantizer": { "algorithm": "QAT_Quantizer",
                 "config_list": [{ "op_types": ["Conv2d", "Linear"],
                                   "quant_types": ["input", "weight", "output"],
                                   "quant_bits": 8 }] }"#;

fn plan_text(distill: Option<&str>) -> String {
    match distill {
        Some(d) => format!("{LEVEL_QAT},\n  \"distill\": {d}\n}}"),
        None => format!("{LEVEL_QAT}\n}}"),
    }
}

#[test]
fn the_example_plan_reads_its_distill_key() -> Result<()> {
    let plan = Plan::from_path(&configs().join("level90-kd.json"))?;
    assert_eq!(
        plan.distill,
        Some(DistillSpec {
            teacher: TeacherSource::Baseline,
            temperature: 4.0,
            alpha: 0.5
        })
    );
    assert!(Plan::from_path(&configs().join("level90.json"))?
        .distill
        .is_none());
    let dir = tempfile::tempdir()?;
    let toml = dir.path().join("kd.toml");
    std::fs::write(
        &toml,
        "[pruner]\nalgorithm = \"LevelPruner\"\n[[pruner.config_list]]\nsparsity = 0.5\n\
         op_types = [\"default\"]\n[distill]\ntemperature = 2\nalpha = 0.9\n",
    )?;
    let spec = Plan::from_path(&toml)?.distill.context("toml distill")?;
    assert_eq!((spec.temperature, spec.alpha), (2.0, 0.9));
    let yaml = dir.path().join("kd.yaml");
    std::fs::write(
        &yaml,
        "quantizer:\n  algorithm: DoReFaQuantizer\n  config_list:\n    - op_types: [Conv2d]\n      \
         quant_types: [weight]\n      quant_bits: 2\ndistill:\n  teacher: t.safetensors\n",
    )?;
    let spec = Plan::from_path(&yaml)?.distill.context("yaml distill")?;
    assert_eq!(spec.teacher, TeacherSource::Weights("t.safetensors".into()));
    Ok(())
}

#[test]
fn bad_distill_values_are_refused_naming_the_file_and_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (i, (distill, says)) in [
        (
            r#"{"alpha": 1.5}"#,
            "`distill.alpha` must be a number in [0, 1], found 1.5",
        ),
        (
            r#"{"temperature": 0}"#,
            "`distill.temperature` must be a number > 0, found 0",
        ),
        (
            r#"{"temperature": "4"}"#,
            "`distill.temperature` must be a number > 0",
        ),
        (
            r#"{"teacher": "vgg"}"#,
            "`distill.teacher` must be \"baseline\" or a path",
        ),
        (
            r#"{"temprature": 4}"#,
            "unknown key `distill.temprature`; valid: teacher",
        ),
        ("true", "`distill` must be a map"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&path, plan_text(Some(distill)))?;
        let e = Plan::from_path(&path).expect_err(distill).to_string();
        ensure!(e.contains(&path.display().to_string()), "{e}");
        ensure!(e.contains(says), "{distill}: {e}");
    }
    // Nothing fine-tunes: nothing to distill into.
    let path = dir.path().join("naive.json");
    std::fs::write(
        &path,
        r#"{"quantizer": {"algorithm": "NaiveQuantizer", "config_list":
            [{"op_types": ["default"], "quant_types": ["weight"], "quant_bits": 8}]},
            "distill": {}}"#,
    )?;
    let e = Plan::from_path(&path).expect_err("naive").to_string();
    ensure!(e.contains("`distill` needs a stage that fine-tunes"), "{e}");
    Ok(())
}

#[test]
fn the_teacher_is_a_frozen_copy() -> Result<()> {
    let student = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let distiller = Distiller::new(&student, 4.0, 0.5)?;
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu)?;
    let before = distiller.teacher.graph.forward(&x)?.to_vec2::<f32>()?;
    assert_eq!(before, student.graph.forward(&x)?.to_vec2::<f32>()?);
    assert!(distiller.teacher.trainable_vars().is_empty());
    for (_, var) in student.trainable_vars() {
        var.set(&var.as_tensor().zeros_like()?)?;
    }
    assert_ne!(student.graph.forward(&x)?.to_vec2::<f32>()?, before);
    assert_eq!(
        distiller.teacher.graph.forward(&x)?.to_vec2::<f32>()?,
        before
    );
    Ok(())
}

fn run(dir: &Path, name: &str, distill: Option<&str>) -> Result<Summary> {
    let plan = dir.join(format!("{name}.json"));
    std::fs::write(&plan, plan_text(distill))?;
    let mut opts = CompressOptions::new(dir.join(name));
    opts.data = Some(data::bundled_dir());
    opts.plan = Some(plan);
    opts.cache = dir.join("cache");
    opts.train_limit = Some(600);
    opts.epochs = 2;
    opts.ft_epochs = 2;
    opts.qat_epochs = 1;
    opts.batch_size = 32;
    opts.progress = false;
    Ok(compress::run(&opts)?)
}

#[test]
fn a_distilled_plan_runs_end_to_end_and_reports_its_teacher() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let kd = run(
        dir.path(),
        "kd",
        Some(r#"{"teacher": "baseline", "temperature": 4, "alpha": 0.5}"#),
    )?;
    let report = kd.distill.as_ref().context("no distill in the summary")?;
    assert_eq!(report.teacher, "baseline");
    assert_eq!((report.temperature, report.alpha), (4.0, 0.5));
    // The teacher is the float baseline, measured on the same test split.
    assert_eq!(report.teacher_accuracy, kd.float_accuracy);
    let pruned = kd.pruned_accuracy.context("pruned accuracy")?;
    let quantized = kd.quantized_accuracy.context("quantized accuracy")?;
    eprintln!(
        "KD: float {:.1} %, pruned {:.1} %, QAT {:.1} %",
        100.0 * kd.float_accuracy,
        100.0 * pruned,
        100.0 * quantized
    );
    ensure!(pruned > 0.3 && quantized > 0.3, "{pruned} {quantized}");
    assert!(kd.deployed_accuracy.is_some());
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("kd/summary.json"),
    )?)?;
    assert_eq!(json["distill"]["temperature"], 4.0);
    assert!(kd.to_string().contains("distilled from baseline"));

    // α = 0 is plain cross-entropy: the same training, step for step, as the plan
    // without `distill` (whose summary.json has no `distill` at all).
    let plain = run(dir.path(), "plain", None)?;
    let alpha0 = run(dir.path(), "alpha0", Some(r#"{"alpha": 0}"#))?;
    assert_eq!(plain.pruned_accuracy, alpha0.pruned_accuracy);
    assert_eq!(plain.quantized_accuracy, alpha0.quantized_accuracy);
    assert_eq!(plain.deployed_accuracy, alpha0.deployed_accuracy);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("plain/summary.json"),
    )?)?;
    assert!(json.get("distill").is_none());

    // A teacher from a file: the plain run's exported weights (same architecture).
    let weights = dir.path().join("plain/model.safetensors");
    let distill = format!(
        r#"{{"teacher": "{}", "temperature": 2}}"#,
        weights.display()
    );
    let from_file = run(dir.path(), "file", Some(&distill))?;
    let report = from_file.distill.context("no distill in the summary")?;
    assert_eq!(report.teacher, weights.display().to_string());
    ensure!(report.teacher_accuracy > 0.3, "{}", report.teacher_accuracy);
    Ok(())
}

#[test]
fn a_missing_teacher_file_fails_before_training() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope.safetensors");
    let distill = format!(r#"{{"teacher": "{}"}}"#, missing.display());
    let e = run(dir.path(), "missing", Some(&distill)).expect_err("missing teacher");
    ensure!(e.to_string().contains("nope.safetensors"), "{e}");
    ensure!(!dir.path().join("cache").exists(), "a baseline was trained");
    Ok(())
}
