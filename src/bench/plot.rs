//! `--plot FILE.svg`: throughput and p99 latency over the run, one point per progress
//! interval, as a hand-written SVG (two line charts, one above the other).
//!
//! Written by hand rather than with a plotting crate: two polylines with axes and a few
//! labels are a hundred lines, the output is deterministic and testable as text, and no
//! font or image stack enters the build.

use std::fmt::Write as _;

use super::report::IntervalReport;

const WIDTH: f64 = 800.0;
const PANEL_HEIGHT: f64 = 260.0;
/// Room for the labels around each panel.
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 40.0;
/// Ticks on each axis.
const TICKS: usize = 5;

/// Escapes text for an SVG text node or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|&bound| bound >= value)
        .unwrap_or(10.0 * power)
}

/// Formats an axis label without needless decimals.
fn label(value: f64) -> String {
    if value >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// One panel: a line of (seconds, value) points, `top` pixels from the image's top.
fn panel(svg: &mut String, top: f64, title: &str, unit: &str, points: &[(f64, f64)]) {
    let left = MARGIN_LEFT;
    let right = WIDTH - MARGIN_RIGHT;
    let plot_top = top + MARGIN_TOP;
    let bottom = top + PANEL_HEIGHT - MARGIN_BOTTOM;
    let x_max = nice_ceiling(points.iter().map(|p| p.0).fold(0.0, f64::max));
    let y_max = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let x = |seconds: f64| left + (right - left) * seconds / x_max;
    let y = |value: f64| bottom - (bottom - plot_top) * value / y_max;
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        top + 24.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{plot_top}" width="{:.1}" height="{:.1}" fill="none" stroke="#888"/>"##,
        right - left,
        bottom - plot_top
    );
    for tick in 0..=TICKS {
        let fraction = tick as f64 / TICKS as f64;
        let (tick_x, tick_y) = (x(fraction * x_max), y(fraction * y_max));
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{tick_y:.1}" x2="{right}" y2="{tick_y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left - 6.0,
            tick_y + 4.0,
            label(fraction * y_max)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{tick_x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            label(fraction * x_max)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">seconds</text>"#,
        (left + right) / 2.0,
        bottom + 32.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        (plot_top + bottom) / 2.0,
        (plot_top + bottom) / 2.0,
        escape(unit)
    );
    let line: Vec<String> = points
        .iter()
        .map(|&(seconds, value)| format!("{:.1},{:.1}", x(seconds), y(value)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        line.join(" ")
    );
}

/// The SVG document of a run's intervals under `title`.
pub fn svg(title: &str, intervals: &[IntervalReport]) -> String {
    let throughput: Vec<(f64, f64)> = intervals
        .iter()
        .map(|interval| (interval.end_seconds, interval.ops_per_second))
        .collect();
    let p99: Vec<(f64, f64)> = intervals
        .iter()
        .map(|interval| (interval.end_seconds, interval.p99_us as f64 / 1000.0))
        .collect();
    let height = 2.0 * PANEL_HEIGHT;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    panel(
        &mut svg,
        0.0,
        &format!("{title}: throughput"),
        "ops/s",
        &throughput,
    );
    panel(
        &mut svg,
        PANEL_HEIGHT,
        &format!("{title}: p99 latency"),
        "ms",
        &p99,
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    // The document has both panels with one point per interval, escapes the title, and
    // survives an empty run.
    #[test]
    fn plots_both_series() {
        let intervals: Vec<IntervalReport> = (1..=3)
            .map(|second| IntervalReport {
                end_seconds: second as f64,
                ops: 1000,
                ops_per_second: 1000.0 * second as f64,
                p99_us: 2500,
                errors: 0,
            })
            .collect();
        let document = svg("put <a&b>", &intervals);
        assert!(document.starts_with("<svg") && document.ends_with("</svg>\n"));
        assert_eq!(document.matches("<polyline").count(), 2);
        assert!(document.contains("put &lt;a&amp;b&gt;: throughput"));
        let points = document
            .lines()
            .find(|line| line.starts_with("<polyline"))
            .unwrap();
        assert_eq!(points.matches(',').count(), 3);
        assert!(svg("empty", &[]).contains("<polyline"));
        assert_eq!(nice_ceiling(3100.0), 5000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
