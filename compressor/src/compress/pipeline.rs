//! The whole job behind `cargo xtask compress`: plan checked against the model → data →
//! cached baseline (or `--weights`) → the distillation teacher, if the plan has one →
//! prune and fine-tune (in rounds, for iterative pruners) → speedup (channel pruners) →
//! fold batch norms, quantize and fine-tune → export → packed int8 model run on the host
//! → summary.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::fold_batch_norms;
use super::options::{say, stage_config, CompressOptions, Distillation};
use super::plan::{Plan, QuantizerKind};
use super::pruning::{checked_pruner, prune_and_fine_tune, PruneOutcome};
use super::report::{write_report, REPORT_FILE};
use super::speedup::{max_output_change, speed_up, SpeedupReport};
use super::summary::{layer_rows, quantized_outputs, record_stored, Summary};
use crate::data::{self, Dataset};
use crate::export::{self, packed, write_atomic};
use crate::models::Model;
use crate::prune::Pruner;
use crate::quant;
use crate::train::{self, evaluate, DistillReport, DistillSpec, Distiller, TeacherSource};
use crate::Result;

/// The model's part of the baseline cache key: its zoo name, or for an imported ONNX
/// file its stem and content fingerprint (a path would nest folders, and an edited file
/// must not reuse a stale baseline).
fn model_tag(opts: &CompressOptions) -> Result<String> {
    if !crate::import::onnx::is_onnx_path(&opts.model) {
        return Ok(opts.model.clone());
    }
    let path = Path::new(&opts.model);
    let bytes = std::fs::read(path).map_err(crate::Error::io(path))?;
    let stem = path
        .file_stem()
        .map_or_else(|| "onnx".into(), |s| s.to_string_lossy());
    Ok(format!("{stem}-onnx{}", data::content_fingerprint(&bytes)))
}

/// Runs the job and writes everything into `opts.out`.
pub fn run(opts: &CompressOptions) -> Result<Summary> {
    let started = Instant::now();
    let plan = match &opts.plan {
        Some(p) => Plan::from_path_with(p, &opts.registry)?,
        None => Plan::default_plan()?,
    };
    let source = data::resolve(opts.data.as_deref())?;
    say(opts, format!("data: {}", source.describe()));
    let (train_full, test) = source.load()?;
    let normalize = (opts.normalize.clone())
        .or_else(|| plan.normalize.clone())
        .unwrap_or_default();
    if !normalize.is_default() {
        say(opts, format!("normalize: {normalize}"));
    }
    let (train_full, test) = (
        train_full.with_normalization(normalize.clone())?,
        test.with_normalization(normalize.clone())?,
    );
    let train_set = match opts.train_limit {
        Some(n) => train_full.subset(n),
        None => train_full,
    };

    // 0. Everything the user gave is checked before anything trains or is written: the
    //    plan against the model, and the weights file.
    let mut model = Model::new(
        &opts.model,
        train_set.num_classes(),
        &opts.device,
        opts.seed,
    )?;
    check_data(&mut model, [&train_set, &test], &normalize)?;
    let mut pruner = match &plan.pruner {
        Some(stage) => Some(checked_pruner(
            opts,
            stage,
            &model,
            train_set.len(),
            &plan.source,
        )?),
        None => None,
    };
    let speedup = match &plan.pruner {
        Some(stage) => opts.registry.speedup(&stage.algorithm, &stage.options)?,
        None => false,
    };
    if let Some(stage) = &plan.quantizer {
        check_quantizer(&model, stage)?;
    }
    if let Some(p) = pruner.as_mut() {
        p.on_init(&model.graph)?;
    }
    let teacher_weights = match plan.distill.as_ref().map(|d| &d.teacher) {
        Some(TeacherSource::Weights(path)) => {
            let teacher = Model::new(
                &opts.model,
                train_set.num_classes(),
                &opts.device,
                opts.seed,
            )?;
            let fingerprint = teacher.load_weights(path)?;
            Some((teacher, fingerprint))
        }
        _ => None,
    };
    let weights_tag = match &opts.weights {
        Some(path) => {
            format!("-w{}", model.load_weights(path)?)
        }
        None => String::new(),
    };
    std::fs::create_dir_all(&opts.out).map_err(crate::Error::io(&opts.out))?;

    // 1. Baseline, trained once per (model, data, seed, epochs, weights, sparsity
    //    training) and cached.
    let baseline_tag = pruner.as_ref().and_then(|p| p.baseline_tag());
    let key = format!(
        "{}-{}-n{}-seed{}-ep{}{weights_tag}{}",
        model_tag(opts)?,
        train_set.fingerprint(),
        train_set.len(),
        opts.seed,
        opts.epochs,
        baseline_tag
            .as_ref()
            .map_or(String::new(), |t| format!("-{t}"))
    );
    let baseline_dir = opts.cache.join(&key);
    let mut cfg = stage_config(opts, opts.epochs, &baseline_dir, &key, "baseline");
    cfg.resume = true; // the cache: a finished checkpoint is reused, a killed one continues
    let hooks: Option<&mut dyn Pruner> = match (&baseline_tag, pruner.as_mut()) {
        (Some(_), Some(p)) => Some(p.as_mut()),
        _ => None,
    };
    let baseline = train::train(&mut model, &train_set, &test, &cfg, hooks)?;
    let float_accuracy = evaluate(&model, &test)?;
    say(
        opts,
        format!(
            "baseline {}: {:.2}% top-1 ({})",
            opts.model,
            100.0 * float_accuracy,
            if opts.epochs == 0 && opts.weights.is_some() {
                "--weights as given".to_string()
            } else {
                baseline_dir.display().to_string()
            }
        ),
    );

    // 1b. The distillation teacher: a frozen copy of the baseline (or of the plan's
    //     teacher weights), taken before anything is compressed.
    let distill = match &plan.distill {
        Some(spec) => Some(teacher_stage(opts, spec, &model, teacher_weights, &test)?),
        None => None,
    };

    // 2. Pruning + fine-tuning.
    let pruned = match (&plan.pruner, pruner.as_mut()) {
        (Some(stage), Some(pruner)) => prune_and_fine_tune(
            opts,
            stage,
            pruner.as_mut(),
            &mut model,
            (&train_set, &test),
            (&key, distill.as_ref()),
            speedup,
        )?,
        _ => PruneOutcome::default(),
    };
    let speedup = match speedup {
        true => Some(speedup_stage(opts, &mut model, &test)?),
        false => None,
    };

    // 3. Quantization (QAT, DoReFa and BNN fine-tune; the naive quantizer only rounds
    //    weights).
    let mut quantized_accuracy = None;
    if let Some(stage) = &plan.quantizer {
        let kind = QuantizerKind::parse(&stage.algorithm)?;
        let folded = fold_batch_norms(&mut model)?;
        if !folded.is_empty() {
            say(
                opts,
                format!(
                    "folded {} batch norms into their convolutions",
                    folded.len()
                ),
            );
        }
        quant::bind(kind.make(), &mut model.graph, &stage.config_list)?;
        if kind.trains() {
            let ft_key = format!(
                "{key}-{}-{}{}",
                plan.pruner
                    .as_ref()
                    .map_or("none", |p| p.algorithm.as_str()),
                stage.algorithm,
                if speedup.is_some() { "-speedup" } else { "" }
            );
            let label = match kind {
                QuantizerKind::Qat => "QAT fine-tune".to_string(),
                _ => format!("{} fine-tune", stage.algorithm),
            };
            let mut cfg = stage_config(
                opts,
                opts.qat_epochs,
                &opts.out.join("checkpoints/quant"),
                &ft_key,
                &label,
            );
            cfg.lr = stage.lr.unwrap_or(5e-4);
            if let Some(d) = &distill {
                d.apply(&mut cfg);
            }
            train::train(&mut model, &train_set, &test, &cfg, None)?;
        } else {
            // One eval pass records the weight scales for calibration.json.
            evaluate(&model, &test.subset(1))?;
        }
        let acc = evaluate(&model, &test)?;
        say(
            opts,
            format!("{}: {:.2}% top-1", stage.algorithm, 100.0 * acc),
        );
        quantized_accuracy = Some(acc);
    }

    // 4. Exports.
    let [c, h, w] = model.graph.input_shape();
    export::export_model(
        &model.graph,
        &opts.out.join("model.safetensors"),
        &opts.out.join("masks.safetensors"),
        Some(&opts.out.join("model.onnx")),
        [1, c, h, w],
    )?;
    export::write_calibration(&model.graph, &opts.out.join("calibration.json"))?;

    // 5. The packed int8 model and its test vectors, run by sprig-runtime on the host.
    let deployed = deploy(opts, &model, &test)?;

    let mut layers = layer_rows(&model.graph)?;
    if let Ok(d) = &deployed {
        record_stored(&mut layers, &d.packed)?;
    }
    let summary = Summary {
        model: opts.model.clone(),
        data: source.describe(),
        plan: plan.source.clone(),
        distill: distill.map(|d| d.report),
        train_images: train_set.len(),
        test_images: test.len(),
        baseline_history: baseline.history,
        float_accuracy,
        one_shot_accuracy: pruned.one_shot_accuracy,
        pruned_accuracy: pruned.rounds.last().map(|r| r.accuracy),
        prune_rounds: pruned.rounds,
        speedup,
        quantized_accuracy,
        layers,
        weight_bits: weight_bits(&model),
        quantizer: model
            .graph
            .quant()
            .map(|q| q.quantizer().name().to_string()),
        quantized_outputs: quantized_outputs(&model.graph),
        deployed_accuracy: deployed.as_ref().ok().map(|d| d.report.deployed_accuracy),
        agreement: deployed.as_ref().ok().map(|d| d.report.agreement),
        blob_bytes: deployed.as_ref().ok().map(|d| d.packed.blob_bytes()),
        arena_bytes: deployed.as_ref().ok().map(|d| d.packed.arena_bytes),
        packed_skipped: deployed.err(),
        seconds: started.elapsed().as_secs_f32(),
        out: opts.out.display().to_string(),
    };
    summary.write_json(&opts.out.join("summary.json"))?;
    write_report(&summary, &opts.out.join(REPORT_FILE))?;
    Ok(summary)
}

/// Freezes the teacher `spec` names (the trained `model`, or the weights loaded in
/// `loaded` with their fingerprint) and measures it on `test`.
fn teacher_stage(
    opts: &CompressOptions,
    spec: &DistillSpec,
    model: &Model,
    loaded: Option<(Model, String)>,
    test: &Dataset,
) -> Result<Distillation> {
    let (distiller, fingerprint) = match &loaded {
        Some((teacher, fingerprint)) => (
            Distiller::new(teacher, spec.temperature, spec.alpha)?,
            format!("w{fingerprint}"),
        ),
        None => (
            Distiller::new(model, spec.temperature, spec.alpha)?,
            "baseline".to_string(),
        ),
    };
    let teacher_accuracy = evaluate(&distiller.teacher, test)?;
    say(
        opts,
        format!(
            "distillation: teacher {} ({:.2}% top-1), T {}, alpha {}",
            spec.teacher,
            100.0 * teacher_accuracy,
            spec.temperature,
            spec.alpha
        ),
    );
    Ok(Distillation {
        distiller: Arc::new(distiller),
        tag: spec.tag(&fingerprint),
        report: DistillReport {
            teacher: spec.teacher.to_string(),
            temperature: spec.temperature,
            alpha: spec.alpha,
            teacher_accuracy,
        },
    })
}

/// Cuts the channels the pruner removed and measures the cut model against the masked
/// one on `test`.
fn speedup_stage(
    opts: &CompressOptions,
    model: &mut Model,
    test: &Dataset,
) -> Result<SpeedupReport> {
    let masked = model.graph.clone();
    let mut report = speed_up(model)?;
    let change = max_output_change(&masked, &model.graph, test, &model.device)?;
    report.max_output_change = Some(change);
    say(
        opts,
        format!(
            "speedup: {} -> {} parameters, {} layers changed; outputs within {change:.1e} \
             of the masked model",
            report.parameters_before,
            report.parameters_after,
            report.layers.len()
        ),
    );
    Ok(report)
}

/// What step 5 produced.
struct Deployed {
    packed: packed::Packed,
    report: packed::DeployReport,
}

/// Packs the model to `model.sprig`, writes `vectors.bin` and evaluates the deployed
/// model on `test`. A model the format cannot hold (no quantizer, sub-8-bit widths, a
/// tensor without a grid) is not an error of the run: the reason comes back instead,
/// and stale files from an earlier run are removed so the folder stays consistent.
fn deploy(
    opts: &CompressOptions,
    model: &Model,
    test: &Dataset,
) -> Result<std::result::Result<Deployed, String>> {
    let sprig = opts.out.join(packed::PACKED_FILE);
    let vectors = opts.out.join(packed::VECTORS_FILE);
    let packed = match packed::pack(&model.graph) {
        Ok(p) => p,
        Err(e) => {
            for stale in [&sprig, &vectors] {
                if stale.exists() {
                    std::fs::remove_file(stale).map_err(crate::Error::io(stale))?;
                }
            }
            let reason = match e {
                crate::Error::Export { message, .. } => message,
                other => other.to_string(),
            };
            say(
                opts,
                format!("no {} written: {reason}", packed::PACKED_FILE),
            );
            return Ok(Err(reason));
        }
    };
    write_atomic(&sprig, &packed.blob)?;
    let n = packed::write_vectors(&packed.blob, test, packed::DEFAULT_VECTOR_COUNT, &vectors)?;
    say(
        opts,
        format!(
            "{}: {} bytes ({:.4} x stored weights + int32 biases), arena {} bytes{}; {} with {n} test vectors",
            sprig.display(),
            packed.blob_bytes(),
            packed.overhead_ratio(),
            packed.arena_bytes,
            match packed.packed_bit_tensors {
                0 => String::new(),
                n => format!(" ({n} activations between binary ops as packed bits)"),
            },
            packed::VECTORS_FILE
        ),
    );
    say(opts, packed.weights_table()?.trim_end());
    let report = packed::deployed_eval(&model.graph, &packed.blob, test)?;
    say(
        opts,
        format!(
            "deployed int8 (sprig-runtime, host): {:.2}% top-1 beside fake-quant {:.2}%; \
             agreement {:.2}% ({} of {} images differ); outputs {:.3} steps off on average, \
             {:.0} at most; {:.2}% of outputs equal to the simulated integer model",
            100.0 * report.deployed_accuracy,
            100.0 * report.fake_quant_accuracy,
            100.0 * report.agreement,
            report.disagreements,
            report.images,
            report.mean_abs_diff_steps,
            report.max_abs_diff_steps,
            100.0 * report.simulated_exact_outputs
        ),
    );
    Ok(Ok(Deployed { packed, report }))
}

/// The quantizer's config list against the model, before anything trains (batch norms
/// fold away first, so their names are not quantizable).
fn check_quantizer(model: &Model, stage: &super::Stage) -> Result<()> {
    QuantizerKind::parse(&stage.algorithm)?
        .make()
        .resolve(&model.graph, &stage.config_list)?;
    Ok(())
}

fn weight_bits(model: &Model) -> Option<u8> {
    let binding = model.graph.quant()?;
    binding
        .layers()
        .values()
        .filter_map(|l| l.config.bits(crate::config::QuantType::Weight))
        .max()
}

/// Checks that the model takes both splits' images and has a class for every label,
/// and declares the input grid the normalization puts images on (kept off for a graph
/// that declares none).
fn check_data(
    model: &mut Model,
    splits: [&Dataset; 2],
    normalize: &data::Normalization,
) -> Result<()> {
    let shape = model.graph.input_shape();
    for data in splits {
        data.check_model(&model.name, shape, usize::MAX)?;
    }
    // The class count is what the graph outputs (an imported model brings its own).
    let probe = candle_core::Tensor::zeros(
        (1, shape[0], shape[1], shape[2]),
        candle_core::DType::F32,
        &model.device,
    )?;
    let classes = model.graph.forward(&probe)?.elem_count();
    for data in splits {
        data.check_model(&model.name, shape, classes)?;
    }
    if model.graph.input_grid().is_some() {
        model.graph.set_input_grid(Some(normalize.input_grid()));
    }
    Ok(())
}

/// Loads the training split only (used by benchmarks).
pub fn load_train(data: Option<&Path>) -> Result<Dataset> {
    Ok(data::resolve(data)?.load()?.0)
}
