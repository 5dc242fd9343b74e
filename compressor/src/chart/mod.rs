//! SVG charts for the reports: grouped bars per category (`cargo xtask compress`'s
//! `report.svg`) and lines over a swept value (the sweeps of `cargo xtask bench`).
//!
//! Drawn with plotters' SVG backend without a font backend: text stays SVG `<text>`,
//! which the viewer renders, so nothing on the machine has to provide fonts.

mod bars;
mod lines;

pub use bars::{draw_bars, BarPanel, BarScale, BarSeries};
pub use lines::{line_chart, LineChart};

use plotters::style::RGBColor;

/// Colours of successive series (matplotlib's first four, which readers know).
pub const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Why a chart could not be drawn (plotters' error, as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawError(pub String);

impl std::fmt::Display for DrawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "drawing the chart: {}", self.0)
    }
}

impl std::error::Error for DrawError {}

/// Turns any plotters error into a [`DrawError`].
pub(crate) fn draw_err<E: std::fmt::Display>(e: E) -> DrawError {
    DrawError(e.to_string())
}

/// The contents of an SVG's `<text>` elements, trimmed (for tests).
#[cfg(test)]
pub(crate) fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}
