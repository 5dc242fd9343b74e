//! `report.svg`, written beside `summary.json`: what compression did, as four panels —
//! accuracy at each stage (float → pruned → fake-quant → deployed), and per layer the
//! parameters kept, the bit widths, and the weight bytes (float32, dense at the layer's
//! width, as stored in `model.sprig`).

use std::path::Path;

use plotters::prelude::*;

use super::summary::{LayerRow, Summary};
use crate::chart::{draw_bars, draw_err, BarPanel, BarScale, BarSeries, DrawError};
use crate::export::write_atomic;
use crate::{Error, Result};

/// File name of the report in a run folder.
pub const REPORT_FILE: &str = "report.svg";

/// Size of the whole report in pixels.
const SIZE: (u32, u32) = (1200, 860);

/// Draws `summary`'s report and writes it to `path` atomically.
pub fn write_report(summary: &Summary, path: &Path) -> Result<()> {
    let svg = render_report(summary).map_err(|e| Error::Export {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, svg.as_bytes())
}

/// `summary`'s report as SVG text.
pub fn render_report(summary: &Summary) -> std::result::Result<String, DrawError> {
    let layers: Vec<String> = summary.layers.iter().map(|r| r.name.clone()).collect();
    let (stages, accuracy) = accuracy_stages(summary);
    let accuracy = [BarSeries {
        label: "top-1".into(),
        values: accuracy,
    }];
    let parameters = [
        layer_series(summary, "weights", |r| Some(r.weights)),
        layer_series(summary, "kept (nonzero)", |r| Some(r.nonzero_weights)),
    ];
    let bits = [
        layer_series(summary, "weight", |r| r.weight_bits.map(usize::from)),
        layer_series(summary, "input", |r| r.input_bits.map(usize::from)),
        layer_series(summary, "output", |r| r.output_bits.map(usize::from)),
    ];
    let widest = bits
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(8.0f64, |m, &b| m.max(b));
    let bytes = [
        layer_series(summary, "float32", |r| Some(4 * r.weights)),
        layer_series(summary, "dense at its bits", |r| {
            Some((r.weights * usize::from(r.weight_bits.unwrap_or(8))).div_ceil(8))
        }),
        layer_series(summary, "in model.sprig", |r| r.stored_bytes),
    ];

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root
            .titled(&title(summary), ("sans-serif", 18))
            .map_err(draw_err)?;
        // Room under the panels for the two footnote lines.
        let body_height = root.dim_in_pixel().1 - 50;
        let (body, footer) = root.split_vertically(body_height);
        let panels = body.split_evenly((2, 2));
        draw_bars(
            &panels[0],
            &BarPanel {
                title: "top-1 accuracy at each stage",
                y_desc: "%",
                categories: &stages,
                series: &accuracy,
                scale: BarScale::Linear { max: 100.0 },
                value_label: Some(|v| format!("{v:.2}")),
                empty_note: "",
            },
        )?;
        draw_bars(
            &panels[1],
            &BarPanel {
                title: "parameters per layer (log scale)",
                y_desc: "weights",
                categories: &layers,
                series: &parameters,
                scale: BarScale::Log10,
                value_label: None,
                empty_note: "no weighted layers",
            },
        )?;
        draw_bars(
            &panels[2],
            &BarPanel {
                title: "bits per layer",
                y_desc: "bits",
                categories: &layers,
                series: &bits,
                scale: BarScale::Linear { max: widest },
                value_label: Some(|v| format!("{v}")),
                empty_note: "not quantized: float32 weights and activations",
            },
        )?;
        draw_bars(
            &panels[3],
            &BarPanel {
                title: "weight bytes per layer (log scale)",
                y_desc: "bytes",
                categories: &layers,
                series: &bytes,
                scale: BarScale::Log10,
                value_label: None,
                empty_note: "no weighted layers",
            },
        )?;
        for (i, line) in footnote(summary).into_iter().enumerate() {
            footer
                .draw(&Text::new(
                    line,
                    (16, 10 + 20 * i as i32),
                    ("sans-serif", 13).into_font(),
                ))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// "lenet5 — configs/level80-qat8.json" (the data is named in the footnote).
fn title(s: &Summary) -> String {
    let mut title = format!("{} — {}", s.model, s.plan);
    if title.chars().count() > 120 {
        title = title.chars().take(119).chain(['…']).collect();
    }
    title
}

/// The stages that ran and their top-1 (%): float, one-shot, each Lottery Ticket round,
/// fine-tuned, fake-quant, deployed.
fn accuracy_stages(s: &Summary) -> (Vec<String>, Vec<Option<f64>>) {
    let mut stages = vec![("float".to_string(), Some(s.float_accuracy))];
    stages.push(("pruned, one-shot".into(), s.one_shot_accuracy));
    if s.prune_rounds.len() > 1 {
        for r in &s.prune_rounds {
            stages.push((format!("round {}", r.round), Some(r.accuracy)));
        }
    }
    stages.push(("pruned + fine-tune".into(), s.pruned_accuracy));
    stages.push(("fake-quant".into(), s.quantized_accuracy));
    stages.push(("deployed".into(), s.deployed_accuracy));
    stages
        .into_iter()
        .filter_map(|(name, a)| Some((name, Some(100.0 * f64::from(a?)))))
        .unzip()
}

/// One value per layer row.
fn layer_series(s: &Summary, label: &str, value: impl Fn(&LayerRow) -> Option<usize>) -> BarSeries {
    BarSeries {
        label: label.to_string(),
        values: s
            .layers
            .iter()
            .map(|r| value(r).map(|v| v as f64))
            .collect(),
    }
}

/// The two lines under the panels: the data; then weights kept, bytes, arena.
fn footnote(s: &Summary) -> [String; 2] {
    let (w, nz) = (s.total(|r| r.weights), s.total(|r| r.nonzero_weights));
    let data = format!(
        "data: {} ({} train / {} test images)",
        s.data, s.train_images, s.test_images
    );
    let mut note = format!(
        "{nz} of {w} weights kept ({:.1} % sparse); float32 {} B",
        100.0 * (1.0 - nz as f64 / w.max(1) as f64),
        s.float_bytes()
    );
    match (s.blob_bytes, s.arena_bytes, &s.packed_skipped) {
        (Some(blob), Some(arena), _) => note += &format!("; model.sprig {blob} B, arena {arena} B"),
        (_, _, Some(why)) => note += &format!("; no model.sprig: {why}"),
        _ => {}
    }
    [data, note]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::texts;
    use crate::compress::RoundReport;

    fn row(
        name: &str,
        weights: usize,
        nonzero: usize,
        bits: Option<u8>,
        stored: Option<usize>,
    ) -> LayerRow {
        LayerRow {
            name: name.into(),
            op_type: "Conv2d".into(),
            weights,
            nonzero_weights: nonzero,
            biases: 6,
            sparsity: 1.0 - nonzero as f64 / weights as f64,
            channels: 6,
            channels_kept: 6,
            macs: 100 * weights,
            nonzero_macs: 100 * nonzero,
            weight_bits: bits,
            input_bits: bits.map(|_| 8),
            output_bits: bits.map(|_| 8),
            encoding: stored.map(|_| "dense".into()),
            stored_bytes: stored,
        }
    }

    fn summary() -> Summary {
        Summary {
            model: "lenet5".into(),
            data: "Fashion-MNIST".into(),
            plan: "configs/lottery-mixed.json".into(),
            distill: None,
            train_images: 3000,
            test_images: 1000,
            baseline_history: vec![],
            float_accuracy: 0.8991,
            one_shot_accuracy: Some(0.3081),
            prune_rounds: vec![
                RoundReport {
                    round: 1,
                    sparsity: 0.41,
                    accuracy: 0.8712,
                },
                RoundReport {
                    round: 2,
                    sparsity: 0.65,
                    accuracy: 0.8655,
                },
            ],
            speedup: None,
            pruned_accuracy: Some(0.8655),
            quantized_accuracy: Some(0.8601),
            layers: vec![
                row("features.0", 150, 30, Some(4), Some(80)),
                row("classifier.2", 48_000, 9_600, Some(8), Some(14_000)),
            ],
            weight_bits: Some(8),
            quantizer: Some("QAT_Quantizer".into()),
            quantized_outputs: vec![],
            deployed_accuracy: Some(0.8597),
            agreement: Some(0.995),
            blob_bytes: Some(21_946),
            arena_bytes: Some(5_488),
            packed_skipped: None,
            seconds: 1.0,
            out: "runs/x".into(),
        }
    }

    #[test]
    fn report_shows_every_stage_layer_and_total() {
        let labels = texts(&render_report(&summary()).unwrap());
        // Every stage that ran, each round of the pruner, with its top-1.
        for stage in [
            "float",
            "pruned, one-shot",
            "round 1",
            "round 2",
            "pruned + fine-tune",
        ] {
            assert!(labels.contains(&stage.to_string()), "{stage} missing");
        }
        for value in ["89.91", "30.81", "87.12", "86.55", "86.01", "85.97"] {
            assert!(labels.contains(&value.to_string()), "{value} missing");
        }
        // Layers by their own names, in three panels.
        assert_eq!(labels.iter().filter(|l| *l == "features.0").count(), 3);
        // Bits of the 4-bit layer, and the series of the bytes panel.
        assert!(labels.contains(&"4".to_string()));
        assert!(labels.contains(&"in model.sprig".to_string()));
        let foot = labels.iter().find(|l| l.contains("weights kept")).unwrap();
        assert!(
            foot.contains("9630 of 48150") && foot.contains("model.sprig 21946 B"),
            "{foot}"
        );
    }

    #[test]
    fn a_float_run_says_it_is_not_quantized_and_why_nothing_deployed() {
        let mut s = summary();
        s.quantized_accuracy = None;
        s.deployed_accuracy = None;
        s.blob_bytes = None;
        s.arena_bytes = None;
        s.packed_skipped = Some("no quantizer ran".into());
        for r in &mut s.layers {
            (r.weight_bits, r.input_bits, r.output_bits, r.stored_bytes) = (None, None, None, None);
        }
        let labels = texts(&render_report(&s).unwrap());
        assert!(!labels.contains(&"deployed".to_string()));
        assert!(labels.iter().any(|l| l.starts_with("not quantized")));
        assert!(labels
            .iter()
            .any(|l| l.contains("no model.sprig: no quantizer ran")));
    }
}
