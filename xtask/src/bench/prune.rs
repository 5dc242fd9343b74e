//! `cargo xtask bench prune`: every pruner on LeNet-5 and Fashion-MNIST beside the
//! accuracy NNI 2.10 reaches with the same recipe (a float baseline, one pruning step,
//! a short fine-tune, no quantizer), then a sparsity sweep of Level, AGP, L1 and FPGM
//! drawn as an SVG line chart. Every run goes through `compress::run`, as
//! `cargo xtask compress` does, so the figures are the CLI's own.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use sprig_compressor::compress::{self, CompressOptions, Summary};

use super::Args;

/// AGP's schedule for the table's row. NNI's example (`configs/agp80.json`) spans ten
/// epochs; the recipe fine-tunes for two, so the masks go to 50 % before the first
/// fine-tune epoch and to 80 % before the second (`start + span + 1` = 2 epochs needed).
const AGP_START_EPOCH: u64 = 0;
const AGP_END_EPOCH: u64 = 2;
const AGP_FREQUENCY: u64 = 1;
const AGP_INITIAL_SPARSITY: f64 = 0.5;
const AGP_FINAL_SPARSITY: f64 = 0.8;
/// The sweep's AGP starts at this fraction of its final sparsity, so every point of the
/// curve grows on the same relative schedule.
const AGP_SWEEP_INITIAL_FRACTION: f64 = 0.5;

/// Sparsities of the sweep (the chart's x axis).
const SWEEP_SPARSITIES: [f64; 4] = [0.5, 0.7, 0.8, 0.9];
/// The algorithms of the sweep, by row name.
const SWEEP_ROWS: [&str; 4] = ["level", "agp", "l1", "fpgm"];

/// Network Slimming's λ on |γ| while lenet5_bn's baseline trains (the paper's 1e-4).
const SLIM_L1: f64 = 1e-4;
/// Batches of 64 training images APoZ and mean activation rank filters over.
const STATISTICS_BATCHES: u64 = 16;
/// One seed and one cache for every run, so each model's baseline trains once.
const SEED: u64 = 0;
const CACHE: &str = "runs/cache";
const RUNS: &str = "runs/bench-prune";

/// One compression run of the benchmark.
#[derive(Debug, Clone)]
struct Spec {
    /// `--only` name (the algorithm's row) and, for the sweep, the family.
    row: &'static str,
    /// Folder under `runs/bench-prune/`.
    dir: String,
    label: &'static str,
    model: &'static str,
    /// What the sparsity column says.
    sparsity: String,
    /// NNI 2.10's top-1 (%) for this row, from the issue.
    target: Option<f64>,
    /// Whole filters or channels go (channels kept is reported).
    structured: bool,
    /// The pruner stage of the plan.
    pruner: Value,
}

impl Spec {
    fn plan(&self) -> Value {
        json!({ "pruner": self.pruner })
    }
}

fn pct(s: f64) -> String {
    format!("{:.0} %", 100.0 * s)
}

fn stage(algorithm: &str, config: Value) -> Value {
    json!({ "algorithm": algorithm, "config_list": [config] })
}

fn level(s: f64) -> Value {
    stage(
        "LevelPruner",
        json!({ "sparsity": s, "op_types": ["default"] }),
    )
}

fn filters(algorithm: &str, s: f64) -> Value {
    stage(algorithm, json!({ "sparsity": s, "op_types": ["Conv2d"] }))
}

fn agp(initial: f64, final_sparsity: f64) -> Value {
    stage(
        "AGP_Pruner",
        json!({
            "initial_sparsity": initial,
            "final_sparsity": final_sparsity,
            "start_epoch": AGP_START_EPOCH,
            "end_epoch": AGP_END_EPOCH,
            "frequency": AGP_FREQUENCY,
            "op_types": ["default"],
        }),
    )
}

/// AGP for a sweep point: final `s`, initial `AGP_SWEEP_INITIAL_FRACTION · s`.
fn agp_sweep(s: f64) -> Value {
    agp(AGP_SWEEP_INITIAL_FRACTION * s, s)
}

fn with_key(mut pruner: Value, key: &str, value: Value) -> Value {
    pruner[key] = value;
    pruner
}

fn agp_sparsity_text(initial: f64, final_sparsity: f64) -> String {
    format!(
        "{:.0} → {} (epochs {AGP_START_EPOCH}–{AGP_END_EPOCH})",
        100.0 * initial,
        pct(final_sparsity)
    )
}

/// The table's rows, with the NNI 2.10 targets.
fn table_specs() -> Vec<Spec> {
    let spec = |row: &'static str,
                label: &'static str,
                model: &'static str,
                sparsity: String,
                target: f64,
                structured: bool,
                pruner: Value| Spec {
        row,
        dir: row.to_string(),
        label,
        model,
        sparsity,
        target: Some(target),
        structured,
        pruner,
    };
    let activation = |algorithm: &str| {
        with_key(
            filters(algorithm, 0.5),
            "statistics_batches",
            json!(STATISTICS_BATCHES),
        )
    };
    vec![
        spec(
            "level",
            "Level",
            "lenet5",
            pct(0.8),
            88.4,
            false,
            level(0.8),
        ),
        spec(
            "agp",
            "AGP",
            "lenet5",
            agp_sparsity_text(AGP_INITIAL_SPARSITY, AGP_FINAL_SPARSITY),
            88.9,
            false,
            agp(AGP_INITIAL_SPARSITY, AGP_FINAL_SPARSITY),
        ),
        spec(
            "fpgm",
            "FPGM",
            "lenet5",
            pct(0.5),
            87.8,
            true,
            filters("FPGMPruner", 0.5),
        ),
        spec(
            "l1",
            "L1 filter",
            "lenet5",
            pct(0.5),
            87.8,
            true,
            filters("L1FilterPruner", 0.5),
        ),
        spec(
            "l2",
            "L2 filter",
            "lenet5",
            pct(0.5),
            88.6,
            true,
            filters("L2FilterPruner", 0.5),
        ),
        spec(
            "apoz",
            "APoZ",
            "lenet5",
            pct(0.5),
            88.0,
            true,
            activation("ActivationAPoZRankFilterPruner"),
        ),
        spec(
            "mean",
            "mean activation",
            "lenet5",
            pct(0.5),
            88.7,
            true,
            activation("ActivationMeanRankFilterPruner"),
        ),
        spec(
            "slim",
            "Slim",
            "lenet5_bn",
            pct(0.5),
            89.3,
            true,
            with_key(
                stage(
                    "SlimPruner",
                    json!({ "sparsity": 0.5, "op_types": ["BatchNorm2d"] }),
                ),
                "slim_l1",
                json!(SLIM_L1),
            ),
        ),
        spec(
            "lottery",
            "Lottery Ticket",
            "lenet5",
            format!("{} in 3 rounds", pct(0.8)),
            87.0,
            false,
            stage(
                "LotteryTicketPruner",
                json!({ "prune_iterations": 3, "sparsity": 0.8, "op_types": ["default"] }),
            ),
        ),
    ]
}

/// The sweep's runs: each of [`SWEEP_ROWS`] at each of [`SWEEP_SPARSITIES`].
fn sweep_specs() -> Vec<Spec> {
    let mut specs = Vec::new();
    for row in SWEEP_ROWS {
        for s in SWEEP_SPARSITIES {
            let (label, pruner, sparsity, structured) = match row {
                "level" => ("Level", level(s), pct(s), false),
                "agp" => (
                    "AGP",
                    agp_sweep(s),
                    agp_sparsity_text(AGP_SWEEP_INITIAL_FRACTION * s, s),
                    false,
                ),
                "l1" => ("L1 filter", filters("L1FilterPruner", s), pct(s), true),
                "fpgm" => ("FPGM", filters("FPGMPruner", s), pct(s), true),
                other => unreachable!("no sweep plan for {other}"),
            };
            specs.push(Spec {
                row,
                dir: format!("sweep-{row}-{:.0}", 100.0 * s),
                label,
                model: "lenet5",
                sparsity,
                target: None,
                structured,
                pruner,
            });
        }
    }
    specs
}

/// What one run measured (from its [`Summary`]).
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    float: f32,
    one_shot: Option<f32>,
    /// Top-1 after each fine-tuning round (one, or Lottery Ticket's three).
    rounds: Vec<f32>,
    pruned: Option<f32>,
    /// Over every Conv2d and Linear layer.
    weights: usize,
    nonzero: usize,
    /// Conv2d layers: name, filters kept, filters.
    channels: Vec<(String, usize, usize)>,
    seconds: f32,
}

impl Measured {
    fn from_summary(s: &Summary) -> Self {
        Self {
            float: s.float_accuracy,
            one_shot: s.one_shot_accuracy,
            rounds: s.prune_rounds.iter().map(|r| r.accuracy).collect(),
            pruned: s.pruned_accuracy,
            weights: s.total(|r| r.weights),
            nonzero: s.total(|r| r.nonzero_weights),
            channels: s
                .layers
                .iter()
                .filter(|r| r.op_type == "Conv2d")
                .map(|r| (r.name.clone(), r.channels_kept, r.channels))
                .collect(),
            seconds: s.seconds,
        }
    }
}

/// A run's result: its measurements or its error, one line.
type Outcome = Result<Measured, String>;

/// The settings every run shares.
struct Setup<'a> {
    data: Option<&'a Path>,
    epochs: usize,
    ft_epochs: usize,
    train_limit: Option<usize>,
    batch_size: usize,
}

impl Setup<'_> {
    fn options(&self, model: &str, dir: &Path, plan: &Value) -> anyhow::Result<CompressOptions> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let plan_path = dir.join("plan.json");
        std::fs::write(&plan_path, serde_json::to_string_pretty(plan)? + "\n")
            .with_context(|| format!("writing {}", plan_path.display()))?;
        let mut opts = CompressOptions::new(dir);
        opts.model = model.to_string();
        opts.data = self.data.map(Path::to_path_buf);
        opts.plan = Some(plan_path);
        opts.epochs = self.epochs;
        opts.ft_epochs = self.ft_epochs;
        opts.qat_epochs = 0;
        opts.cache = PathBuf::from(CACHE);
        opts.seed = SEED;
        opts.train_limit = self.train_limit;
        opts.batch_size = self.batch_size;
        opts.progress = false;
        Ok(opts)
    }

    fn run(&self, model: &str, dir: &Path, plan: &Value) -> anyhow::Result<Summary> {
        let opts = self.options(model, dir, plan)?;
        Ok(compress::run(&opts)?)
    }
}

/// One line: errors end up in a table cell.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// "1 epoch", "2 epochs".
fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}

fn top1(a: f32) -> String {
    format!("{:.2}", 100.0 * a)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keeps a message from breaking the markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The main table, one row per spec.
fn render_table(rows: &[(Spec, Outcome)]) -> String {
    let mut md = String::from(
        "| algorithm | model | sparsity | float baseline (%) | one-shot → fine-tuned (%) | NNI 2.10 (%) | at or above | params kept | channels kept | time (s) |\n\
         |---|---|---|---:|---|---:|:-:|---:|---|---:|\n",
    );
    for (spec, outcome) in rows {
        let target = spec.target.map_or(String::new(), |t| format!("{t:.1}"));
        let head = format!("| {} | {} | {} |", spec.label, spec.model, spec.sparsity);
        match outcome {
            Err(e) => md.push_str(&format!(
                "{head} **failed**: {} | | {target} | **no** | | | |\n",
                cell(e)
            )),
            Ok(m) => {
                let mut trail = vec![m.one_shot.map_or("–".into(), top1)];
                trail.extend(m.rounds.iter().map(|&a| top1(a)));
                let met = match (spec.target, m.pruned) {
                    (Some(t), Some(a)) if f64::from(100.0 * a) >= t => "yes",
                    (Some(_), _) => "**no**",
                    (None, _) => "",
                };
                let kept = format!(
                    "{} / {} ({:.1} %)",
                    thousands(m.nonzero),
                    thousands(m.weights),
                    100.0 * m.nonzero as f64 / m.weights.max(1) as f64
                );
                let channels = if spec.structured {
                    m.channels
                        .iter()
                        .map(|(name, kept, all)| format!("{name} {kept}/{all}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    String::new()
                };
                md.push_str(&format!(
                    "{head} {} | {} | {target} | {met} | {kept} | {channels} | {:.0} |\n",
                    top1(m.float),
                    trail.join(" → "),
                    m.seconds
                ));
            }
        }
    }
    md
}

/// Fine-tuned top-1 (%) of each sweep family at each sparsity (%); failed points left out.
fn sweep_series(sweep: &[(Spec, Outcome)]) -> Vec<(&'static str, Vec<(f64, f64)>)> {
    let mut series: Vec<(&'static str, Vec<(f64, f64)>)> = Vec::new();
    for (spec, outcome) in sweep {
        let Some(s) = spec.pruner["config_list"][0]["final_sparsity"]
            .as_f64()
            .or_else(|| spec.pruner["config_list"][0]["sparsity"].as_f64())
        else {
            continue;
        };
        let point = outcome
            .as_ref()
            .ok()
            .and_then(|m| m.pruned)
            .map(|a| (100.0 * s, 100.0 * f64::from(a)));
        match series.iter_mut().find(|(label, _)| *label == spec.label) {
            Some((_, points)) => points.extend(point),
            None => series.push((spec.label, point.into_iter().collect())),
        }
    }
    series
}

/// The sweep as a table: one row per algorithm, one column per sparsity.
fn render_sweep_table(sweep: &[(Spec, Outcome)]) -> String {
    let mut md = String::from("| algorithm |");
    for s in SWEEP_SPARSITIES {
        md.push_str(&format!(" {} |", pct(s)));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(SWEEP_SPARSITIES.len()));
    md.push('\n');
    let mut labels: Vec<&str> = Vec::new();
    for (spec, _) in sweep {
        if !labels.contains(&spec.label) {
            labels.push(spec.label);
        }
    }
    for label in labels {
        md.push_str(&format!("| {label} |"));
        for (_, outcome) in sweep.iter().filter(|(s, _)| s.label == label) {
            let text = match outcome {
                Ok(m) => m.pruned.map_or("–".into(), top1),
                Err(_) => "**failed**".into(),
            };
            md.push_str(&format!(" {text} |"));
        }
        md.push('\n');
    }
    md
}

/// The sweep's line chart as SVG text.
fn render_chart(
    series: &[(&str, Vec<(f64, f64)>)],
    baseline: Option<f64>,
    caption: &str,
) -> anyhow::Result<String> {
    use plotters::prelude::*;
    const COLORS: [RGBColor; 4] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .chain(baseline)
        .collect();
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() {
        ((lo - 1.0).floor(), (hi + 1.0).ceil())
    } else {
        (0.0, 100.0)
    };
    let x_lo = 100.0 * SWEEP_SPARSITIES[0] - 5.0;
    let x_hi = 100.0 * SWEEP_SPARSITIES[SWEEP_SPARSITIES.len() - 1] + 5.0;
    let draw_err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the chart: {e}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, lo..hi)
            .map_err(|e| draw_err(&e))?;
        chart
            .configure_mesh()
            .x_desc("sparsity of the pruned layers (%)")
            .y_desc("top-1 after fine-tuning (%)")
            .x_labels(6)
            .y_labels(10)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| draw_err(&e))?;
        if let Some(b) = baseline {
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x_lo, b), (x_hi, b)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(|e| draw_err(&e))?
                .label(format!("float baseline ({b:.2})"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
        }
        // A family whose every run failed has no line; the report lists its errors.
        for (i, (label, points)) in series.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(
                    LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(4),
                )
                .map_err(|e| draw_err(&e))?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    Ok(svg)
}

/// `to` as a link relative to the folder of the markdown file `from`.
fn relative_link(from: &Path, to: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let base = absolute(from);
    let base: Vec<Component> = base.parent().map_or(vec![], |p| p.components().collect());
    let target = absolute(to);
    let target: Vec<Component> = target.components().collect();
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); base.len() - common];
    parts.extend(
        target[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// The command line that reproduces this run (non-default flags only).
fn command(args: &Args) -> String {
    let mut cmd = String::from("cargo xtask bench prune");
    if let Some(d) = &args.data {
        cmd.push_str(&format!(" --data {}", d.display()));
    }
    if args.epochs != 5 {
        cmd.push_str(&format!(" --epochs {}", args.epochs));
    }
    if args.ft_epochs != 2 {
        cmd.push_str(&format!(" --ft-epochs {}", args.ft_epochs));
    }
    if let Some(n) = args.train_limit {
        cmd.push_str(&format!(" --train-limit {n}"));
    }
    if args.batch_size != 64 {
        cmd.push_str(&format!(" --batch-size {}", args.batch_size));
    }
    if !args.only.is_empty() {
        cmd.push_str(&format!(" --only {}", args.only.join(",")));
    }
    if args.no_sweep {
        cmd.push_str(" --no-sweep");
    }
    if args.output != Path::new("BENCHMARKS.md") {
        cmd.push_str(&format!(" --output {}", args.output.display()));
    }
    if args.chart != Path::new("docs/prune-accuracy.svg") {
        cmd.push_str(&format!(" --chart {}", args.chart.display()));
    }
    cmd
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let table = table_specs();
    let known: Vec<&str> = table.iter().map(|s| s.row).collect();
    if let Some(bad) = args.only.iter().find(|n| !known.contains(&n.as_str())) {
        anyhow::bail!("unknown row `{bad}` in --only; valid: {}", known.join(", "));
    }
    let selected = |s: &Spec| args.only.is_empty() || args.only.iter().any(|n| n == s.row);
    let table: Vec<Spec> = table.into_iter().filter(|s| selected(s)).collect();
    let sweep: Vec<Spec> = if args.no_sweep {
        Vec::new()
    } else {
        sweep_specs().into_iter().filter(|s| selected(s)).collect()
    };
    let setup = Setup {
        data: args.data.as_deref(),
        epochs: args.epochs,
        ft_epochs: args.ft_epochs,
        train_limit: args.train_limit,
        batch_size: args.batch_size,
    };
    let runs = Path::new(RUNS);

    // The lenet5 baseline first, on its own: every lenet5 row then finds it cached, so
    // the rows' wall times are comparable (Slim's includes lenet5_bn's sparsity training,
    // which is part of that algorithm).
    let mut baseline = None;
    if table.iter().chain(&sweep).any(|s| s.model == "lenet5") {
        eprintln!("bench prune: lenet5 baseline ({})", epochs(args.epochs));
        let summary = setup
            .run("lenet5", &runs.join("baseline-lenet5"), &json!({}))
            .context("training the lenet5 float baseline")?;
        eprintln!(
            "bench prune: lenet5 baseline {} % top-1 in {:.0} s",
            top1(summary.float_accuracy),
            summary.seconds
        );
        baseline = Some(summary);
    }

    // Each distinct (model, plan) runs once: the sweep reuses the table's identical runs.
    let mut done: HashMap<String, Outcome> = HashMap::new();
    let total = table.len() + sweep.len();
    let mut run_spec = |i: usize, spec: &Spec| -> Outcome {
        let key = format!("{} {}", spec.model, spec.plan());
        if let Some(o) = done.get(&key) {
            eprintln!(
                "bench prune [{i}/{total}] {}: {} {} as in the table",
                spec.dir, spec.label, spec.sparsity
            );
            return o.clone();
        }
        let outcome = setup
            .run(spec.model, &runs.join(&spec.dir), &spec.plan())
            .map(|s| Measured::from_summary(&s))
            .map_err(|e| one_line(&e));
        match &outcome {
            Ok(m) => eprintln!(
                "bench prune [{i}/{total}] {}: {} {} on {}: {} % top-1 (one-shot {}, float {}), {:.1} % of weights kept, {:.0} s",
                spec.dir,
                spec.label,
                spec.sparsity,
                spec.model,
                m.pruned.map_or("–".into(), top1),
                m.one_shot.map_or("–".into(), top1),
                top1(m.float),
                100.0 * m.nonzero as f64 / m.weights.max(1) as f64,
                m.seconds
            ),
            Err(e) => eprintln!("bench prune [{i}/{total}] {}: failed: {e}", spec.dir),
        }
        done.insert(key, outcome.clone());
        outcome
    };
    let rows: Vec<(Spec, Outcome)> = table
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), run_spec(i + 1, s)))
        .collect();
    let swept: Vec<(Spec, Outcome)> = sweep
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), run_spec(table.len() + i + 1, s)))
        .collect();

    let float = baseline
        .as_ref()
        .map(|b| f64::from(100.0 * b.float_accuracy));
    let mut chart_written = false;
    if !swept.is_empty() {
        let series = sweep_series(&swept);
        if series.iter().any(|(_, p)| !p.is_empty()) {
            let caption = format!(
                "LeNet-5, Fashion-MNIST: top-1 after {} of fine-tuning",
                epochs(args.ft_epochs)
            );
            let svg = render_chart(&series, float, &caption)?;
            if let Some(dir) = args.chart.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&args.chart, svg)
                .with_context(|| format!("writing {}", args.chart.display()))?;
            println!("chart written to {}", args.chart.display());
            chart_written = true;
        }
    }

    let mut md =
        String::from("\n## Pruning accuracy, lenet5 on Fashion-MNIST, beside NNI 2.10\n\n");
    md.push_str(&format!("- command: `{}`\n", command(args)));
    if let Some(b) = &baseline {
        md.push_str(&format!(
            "- data: {}; {} training / {} test images\n",
            b.data, b.train_images, b.test_images
        ));
        md.push_str(&format!(
            "- recipe: float baseline {} (seed {SEED}, cached in `{CACHE}`: {} % top-1, trained once and shared by every lenet5 run), \
             then the pruner and {} of fine-tuning (Lottery Ticket: 3 rounds of {} each), no quantizer; each run's plan and outputs in `{RUNS}/<run>/`\n",
            epochs(args.epochs),
            top1(b.float_accuracy),
            epochs(args.ft_epochs),
            epochs(args.ft_epochs)
        ));
    } else {
        md.push_str(&format!(
            "- recipe: float baseline {} (seed {SEED}, cached in `{CACHE}`), then the pruner and {} of fine-tuning (Lottery Ticket: 3 rounds of {} each), no quantizer\n",
            epochs(args.epochs),
            epochs(args.ft_epochs),
            epochs(args.ft_epochs)
        ));
    }
    md.push_str(&format!(
        "- plans (built in `xtask/src/bench/prune.rs` after `configs/`): Level and Lottery Ticket on every Conv2d and Linear; \
         AGP likewise on the schedule start_epoch {AGP_START_EPOCH}, end_epoch {AGP_END_EPOCH}, frequency {AGP_FREQUENCY} (fits 2 fine-tune epochs); \
         filter pruners on both Conv2d layers (floor(filters × sparsity) filters each); APoZ and mean activation rank over {STATISTICS_BATCHES} batches; \
         Slim on lenet5_bn's BatchNorm2d with λ = {SLIM_L1:e} on |γ| while its baseline trains (its time includes that baseline)\n"
    ));
    md.push_str(
        "- params kept: nonzero weights over all Conv2d and Linear weights (filter pruners mask only the filters, as NNI does before speed-up); \
         NNI 2.10: the issue's figures for the same recipe, **not measured by us**\n",
    );
    md.push_str(&format!("- machine: {}\n", super::machine()));
    md.push_str(&format!("- date: {}\n\n", super::today()));
    md.push_str(&render_table(&rows));
    if !swept.is_empty() {
        md.push_str(&format!(
            "\nSweep: top-1 (%) after {} of fine-tuning, by the plan's sparsity over the layers it prunes: every Conv2d and Linear weight for Level and AGP \
             (AGP: the column is its final sparsity, initial {AGP_SWEEP_INITIAL_FRACTION} × final, same epochs), Conv2d filters for L1 and FPGM \
             (at 90 % they keep 1 of conv1's 6 filters, as NNI does). Runs identical to the table's are not repeated.",
            epochs(args.ft_epochs)
        ));
        if chart_written {
            md.push_str(&format!(
                " Chart: [{}]({}).",
                args.chart.display(),
                relative_link(&args.output, &args.chart)
            ));
        }
        md.push_str("\n\n");
        md.push_str(&render_sweep_table(&swept));
        let failed: Vec<String> = swept
            .iter()
            .filter_map(|(s, o)| o.as_ref().err().map(|e| format!("- {}: {}\n", s.dir, e)))
            .collect();
        if !failed.is_empty() {
            md.push_str("\nFailed sweep runs:\n\n");
            md.extend(failed);
        }
    }
    println!("{md}");
    super::append_report(&args.output, &md)?;

    let failures: Vec<String> = rows
        .iter()
        .chain(&swept)
        .filter_map(|(s, o)| o.as_ref().err().map(|e| format!("{}: {e}", s.dir)))
        .collect();
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {} runs failed (their errors are in the report):\n  {}",
            failures.len(),
            rows.len() + swept.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(pruned: f32) -> Measured {
        Measured {
            float: 0.9,
            one_shot: Some(0.5),
            rounds: vec![pruned],
            pruned: Some(pruned),
            weights: 61_470,
            nonzero: 12_294,
            channels: vec![("conv1".into(), 3, 6), ("conv2".into(), 8, 16)],
            seconds: 75.4,
        }
    }

    fn spec(row: &str) -> Spec {
        table_specs()
            .into_iter()
            .chain(sweep_specs())
            .find(|s| s.dir == row)
            .unwrap()
    }

    #[test]
    fn table_rows_say_target_met_params_channels_and_errors() {
        let md = render_table(&[
            (spec("level"), Ok(measured(0.885))),
            (spec("fpgm"), Ok(measured(0.87))),
            (spec("apoz"), Err("unknown pruner `X` | valid: A".into())),
        ]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("| algorithm | model | sparsity |"));
        assert_eq!(
            lines[2],
            "| Level | lenet5 | 80 % | 90.00 | 50.00 → 88.50 | 88.4 | yes | 12,294 / 61,470 (20.0 %) |  | 75 |"
        );
        assert!(lines[3].contains("| 87.8 | **no** |"));
        assert!(lines[3].contains("conv1 3/6, conv2 8/16"));
        assert!(lines[4].contains("**failed**: unknown pruner `X` \\| valid: A"));
        // Every row has as many cells as the header.
        let cells = |l: &str| l.replace("\\|", "").matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])));
    }

    #[test]
    fn lottery_row_lists_every_round() {
        let mut m = measured(0.87);
        m.rounds = vec![0.85, 0.86, 0.87];
        let md = render_table(&[(spec("lottery"), Ok(m))]);
        assert!(md.contains("| 80 % in 3 rounds |"));
        assert!(md.contains("| 50.00 → 85.00 → 86.00 → 87.00 |"));
    }

    #[test]
    fn agp_plans_fit_two_fine_tune_epochs() {
        let row = spec("agp").pruner;
        let c = &row["config_list"][0];
        assert_eq!(c["initial_sparsity"], json!(0.5));
        assert_eq!(c["final_sparsity"], json!(0.8));
        assert_eq!(
            (&c["start_epoch"], &c["end_epoch"], &c["frequency"]),
            (&json!(0), &json!(2), &json!(1))
        );
        let sweep = spec("sweep-agp-90").pruner;
        let c = &sweep["config_list"][0];
        assert_eq!(c["final_sparsity"], json!(0.9));
        assert_eq!(c["initial_sparsity"], json!(0.45));
        assert_eq!(c["end_epoch"], json!(AGP_END_EPOCH));
        // Every plan is a plan the compressor reads (pruners not registered yet aside).
        for s in table_specs().into_iter().chain(sweep_specs()) {
            let text = s.plan().to_string();
            if let Err(e) = compress::Plan::from_json_str(&text, &s.dir) {
                assert!(e.to_string().contains("unknown pruner"), "{}: {e}", s.dir);
            }
        }
    }

    #[test]
    fn sweep_table_and_series_follow_the_runs() {
        let runs: Vec<(Spec, Outcome)> = sweep_specs()
            .into_iter()
            .filter(|s| s.row == "level" || s.row == "agp")
            .enumerate()
            .map(|(i, s)| {
                let o = if s.dir == "sweep-agp-90" {
                    Err("boom".to_string())
                } else {
                    Ok(measured(0.80 + 0.01 * i as f32))
                };
                (s, o)
            })
            .collect();
        let md = render_sweep_table(&runs);
        assert!(md
            .starts_with("| algorithm | 50 % | 70 % | 80 % | 90 % |\n|---|---:|---:|---:|---:|\n"));
        assert!(md.contains("| Level | 80.00 | 81.00 | 82.00 | 83.00 |"));
        assert!(md.contains("| AGP | 84.00 | 85.00 | 86.00 | **failed** |"));
        let series = sweep_series(&runs);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].1.len(), 4);
        assert_eq!(series[1].1.len(), 3);
        assert!((series[1].1[2].0 - 80.0).abs() < 1e-9);
        let svg = render_chart(&series, Some(89.0), "test chart").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("test chart") && svg.contains("AGP"));
    }

    #[test]
    fn chart_link_is_relative_to_the_report() {
        assert_eq!(
            relative_link(
                Path::new("BENCHMARKS.md"),
                Path::new("docs/prune-accuracy.svg")
            ),
            "docs/prune-accuracy.svg"
        );
        assert_eq!(
            relative_link(Path::new("/tmp/a/report.md"), Path::new("/tmp/b/c.svg")),
            "../b/c.svg"
        );
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(61_470), "61,470");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
