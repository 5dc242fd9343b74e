//! A line chart over a swept value (sparsity, bit width...), one line per family, with an
//! optional dashed reference line (the float baseline).

use plotters::prelude::*;

use super::{draw_err, DrawError, PALETTE};

/// What a line chart shows.
pub struct LineChart<'a> {
    pub caption: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// The x axis' range (the sweep's ends, with some room).
    pub x_range: std::ops::Range<f64>,
    /// Each family's label and points; a family without points is left out (its runs
    /// failed, which the caller reports).
    pub series: &'a [(&'a str, Vec<(f64, f64)>)],
    /// A horizontal reference: its label and height.
    pub reference: Option<(&'a str, f64)>,
}

/// `chart` as SVG text, 760 × 480 px. The y axis spans the data (and the reference) with
/// one unit of room either side.
pub fn line_chart(chart: &LineChart<'_>) -> Result<String, DrawError> {
    let ys = chart
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .chain(chart.reference.map(|(_, y)| y));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = match lo.is_finite() {
        true => ((lo - 1.0).floor(), (hi + 1.0).ceil()),
        false => (0.0, 100.0),
    };
    let (x_lo, x_hi) = (chart.x_range.start, chart.x_range.end);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(chart.caption, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, lo..hi)
            .map_err(draw_err)?;
        plot.configure_mesh()
            .x_desc(chart.x_desc)
            .y_desc(chart.y_desc)
            .x_labels(6)
            .y_labels(10)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(draw_err)?;
        if let Some((label, y)) = chart.reference {
            let grey = RGBColor(110, 110, 110);
            plot.draw_series(DashedLineSeries::new(
                [(x_lo, y), (x_hi, y)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(draw_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
        }
        for (i, (label, points)) in chart.series.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = PALETTE[i % PALETTE.len()];
            plot.draw_series(
                LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(4),
            )
            .map_err(draw_err)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        plot.configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::texts;

    #[test]
    fn lines_reference_and_labels_are_drawn() {
        let series = [("L1", vec![(50.0, 88.0), (80.0, 86.5)]), ("empty", vec![])];
        let svg = line_chart(&LineChart {
            caption: "sweep",
            x_desc: "sparsity (%)",
            y_desc: "top-1 (%)",
            x_range: 45.0..85.0,
            series: &series,
            reference: Some(("float (89.9)", 89.9)),
        })
        .unwrap();
        assert!(svg.starts_with("<svg"));
        let labels = texts(&svg);
        for text in ["sweep", "sparsity (%)", "L1", "float (89.9)"] {
            assert!(
                labels.contains(&text.to_string()),
                "{text} missing from {labels:?}"
            );
        }
        // A family without points gets no legend entry.
        assert!(!labels.contains(&"empty".to_string()));
    }
}
