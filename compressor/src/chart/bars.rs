//! Grouped bars: one group per category (a layer, a stage), one bar per series.
//!
//! Categories sit at x = 0, 1, 2... and are named under the axis by hand: plotters'
//! own labels on an f64 axis fall where its tick algorithm puts them, not on the groups.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{draw_err, DrawError, PALETTE};

/// How bar heights map to the y axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BarScale {
    /// 0 to `max`.
    Linear { max: f64 },
    /// Decades from 1 up to the largest value, for counts that span orders of magnitude
    /// (lenet5's layers hold 150 to 48,000 weights); values below 1 draw no bar.
    Log10,
}

/// One series: a label for the legend and a value per category (`None`: no bar).
#[derive(Debug, Clone, PartialEq)]
pub struct BarSeries {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

/// One panel of grouped bars.
pub struct BarPanel<'a> {
    pub title: &'a str,
    pub y_desc: &'a str,
    pub categories: &'a [String],
    pub series: &'a [BarSeries],
    pub scale: BarScale,
    /// Writes each bar's value above it when given.
    pub value_label: Option<fn(f64) -> String>,
    /// Shown in the middle of the panel instead of bars when no series has a value.
    pub empty_note: &'a str,
}

/// Fraction of a category's slot that its group of bars takes.
const GROUP_WIDTH: f64 = 0.8;
/// Rough width of one character of 11 px sans-serif, to decide when names collide.
const CHAR_PX: f64 = 6.2;

/// Draws `panel` on `area`.
pub fn draw_bars(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: &BarPanel<'_>,
) -> Result<(), DrawError> {
    let n = panel.categories.len();
    // Room above the bars for their value labels and the legend, so neither covers one.
    let legend = panel.series.len() > 1;
    let mut headroom = 0.0;
    if panel.value_label.is_some() {
        headroom += 0.08;
    }
    if legend {
        headroom += 0.3;
    }
    let top = match panel.scale {
        BarScale::Linear { max } => max * (1.0 + headroom),
        BarScale::Log10 => {
            let largest = panel
                .series
                .iter()
                .flat_map(|s| s.values.iter().flatten())
                .fold(1.0f64, |m, &v| m.max(v));
            // In decades: twice the linear fraction looks alike on lenet5's panels.
            (largest.log10() + 2.0 * headroom).ceil().max(1.0)
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(-0.5..(n.max(1) as f64 - 0.5), 0.0..top)
        .map_err(draw_err)?;
    let log = panel.scale == BarScale::Log10;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&|_| String::new())
        .y_desc(panel.y_desc)
        .y_labels(if log { top as usize + 1 } else { 6 })
        .y_label_formatter(&|&y| match log {
            true if (y - y.round()).abs() < 1e-9 => short_count(10f64.powf(y.round())),
            true => String::new(),
            false => format!("{y:.0}"),
        })
        .draw()
        .map_err(draw_err)?;

    let height = |v: f64| match panel.scale {
        BarScale::Linear { .. } => v,
        BarScale::Log10 => v.max(1.0).log10(),
    };
    let k = panel.series.len().max(1) as f64;
    let bar = GROUP_WIDTH / k;
    for (j, series) in panel.series.iter().enumerate() {
        let color = PALETTE[j % PALETTE.len()];
        let left = |i: usize| i as f64 - GROUP_WIDTH / 2.0 + j as f64 * bar;
        let bars = series.values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            Some(Rectangle::new(
                [
                    (left(i) + 0.05 * bar, 0.0),
                    (left(i) + 0.95 * bar, height(v)),
                ],
                color.filled(),
            ))
        });
        let drawn = chart.draw_series(bars).map_err(draw_err)?;
        if legend {
            drawn.label(series.label.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
        if let Some(format) = panel.value_label {
            let style = TextStyle::from(("sans-serif", 11).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            let labels = series.values.iter().enumerate().filter_map(|(i, v)| {
                let v = (*v)?;
                Some(Text::new(
                    format(v),
                    (left(i) + bar / 2.0, height(v)),
                    style.clone(),
                ))
            });
            chart.draw_series(labels).map_err(draw_err)?;
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(draw_err)?;
    }
    if panel
        .series
        .iter()
        .all(|s| s.values.iter().all(Option::is_none))
    {
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            panel.empty_note,
            (w as i32 / 2, h as i32 / 2),
            TextStyle::from(("sans-serif", 13).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(draw_err)?;
    }
    name_categories(area, &chart, panel.categories)
}

/// Writes each category's name under its group; names that would collide alternate
/// between two lines, and what still does not fit is cut with an ellipsis.
fn name_categories(
    area: &DrawingArea<SVGBackend, Shift>,
    chart: &ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    categories: &[String],
) -> Result<(), DrawError> {
    let (ox, oy) = area.get_base_pixel();
    let slot = match categories.len() {
        0 | 1 => f64::INFINITY,
        _ => f64::from(chart.backend_coord(&(1.0, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0),
    };
    let longest = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let stagger = longest as f64 * CHAR_PX > slot;
    let fits = ((if stagger { 2.0 } else { 1.0 } * slot / CHAR_PX) as usize).max(4);
    let style =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, 0.0));
        let line = if stagger && i % 2 == 1 { 14 } else { 0 };
        area.draw(&Text::new(
            cut(name, fits),
            (x - ox, y - oy + 5 + line),
            style.clone(),
        ))
        .map_err(draw_err)?;
    }
    Ok(())
}

/// `name`, cut to `chars` characters with an ellipsis when longer.
fn cut(name: &str, chars: usize) -> String {
    match name.chars().count() > chars {
        true => name.chars().take(chars - 1).chain(['…']).collect(),
        false => name.to_string(),
    }
}

/// 1, 10, 100, 1k, 10k, 100k, 1M...
fn short_count(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::texts;

    fn render(panel: &BarPanel<'_>) -> String {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (500, 360)).into_drawing_area();
            draw_bars(&root, panel).unwrap();
            root.present().unwrap();
        }
        svg
    }

    #[test]
    fn every_value_gets_a_bar_and_every_category_its_name() {
        let categories = ["conv1".to_string(), "fc1".to_string(), "fc2".to_string()];
        let series = [
            BarSeries {
                label: "weights".into(),
                values: vec![Some(150.0), Some(48_000.0), Some(840.0)],
            },
            BarSeries {
                label: "kept".into(),
                values: vec![Some(30.0), None, Some(168.0)],
            },
        ];
        let svg = render(&BarPanel {
            title: "parameters",
            y_desc: "count",
            categories: &categories,
            series: &series,
            scale: BarScale::Log10,
            value_label: None,
            empty_note: "",
        });
        // Five values, five bars (plus the background, the plot and the legend's swatches).
        let bars = svg.matches("<rect").count();
        let plain = render(&BarPanel {
            title: "parameters",
            y_desc: "count",
            categories: &categories,
            series: &[
                BarSeries {
                    label: "weights".into(),
                    values: vec![None; 3],
                },
                BarSeries {
                    label: "kept".into(),
                    values: vec![None; 3],
                },
            ],
            scale: BarScale::Log10,
            value_label: None,
            empty_note: "",
        });
        assert_eq!(bars - plain.matches("<rect").count(), 5);
        for text in [
            "conv1",
            "fc1",
            "fc2",
            "weights",
            "kept",
            "10k",
            "parameters",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn value_labels_and_the_empty_note() {
        let categories = ["float".to_string(), "deployed".to_string()];
        let series = [BarSeries {
            label: "top-1".into(),
            values: vec![Some(89.91), Some(89.4)],
        }];
        let svg = render(&BarPanel {
            title: "accuracy",
            y_desc: "%",
            categories: &categories,
            series: &series,
            scale: BarScale::Linear { max: 100.0 },
            value_label: Some(|v| format!("{v:.1}")),
            empty_note: "nothing",
        });
        let labels = texts(&svg);
        assert!(labels.contains(&"89.9".into()) && labels.contains(&"89.4".into()));
        assert!(!labels.contains(&"nothing".into()));
        let empty = [BarSeries {
            label: "top-1".into(),
            values: vec![None, None],
        }];
        let svg = render(&BarPanel {
            title: "accuracy",
            y_desc: "%",
            categories: &categories,
            series: &empty,
            scale: BarScale::Linear { max: 100.0 },
            value_label: None,
            empty_note: "not quantized",
        });
        assert!(texts(&svg).contains(&"not quantized".into()));
    }

    #[test]
    fn crowded_names_alternate_lines_and_long_ones_are_cut() {
        assert_eq!(cut("stack1.conv1", 6), "stack…");
        assert_eq!(cut("fc1", 6), "fc1");
        assert_eq!(short_count(10_000.0), "10k");
        assert_eq!(short_count(1e6), "1M");
        assert_eq!(short_count(100.0), "100");
    }
}
