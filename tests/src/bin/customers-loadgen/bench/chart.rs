//! The benchmark's SVG chart: throughput and p99 against concurrency, one polyline per main
//! line, drawn by hand (a few hundred bytes of SVG need no plotting crate).

use std::fmt::Write;

use super::lines::{Line, Row, find};
use crate::load::Summary;

/// One figure of a run, as plotted.
type Metric = fn(&Summary) -> f64;

/// Two panels (throughput, p99) with one line per series, concurrency on a log scale.
pub(super) fn chart(rows: &[Row], levels: &[usize]) -> String {
    const SERIES: [(Line, &str); 7] = [
        (Line::Ceiling, "#888888"),
        (Line::Durable, "#2ca02c"),
        (Line::Peer, "#9467bd"),
        (Line::HttpEventsOff, "#17becf"),
        (Line::Http, "#1f77b4"),
        (Line::Nats, "#d62728"),
        (Line::HttpReplicated, "#ff7f0e"),
    ];
    let (width, height, margin) = (960.0, 420.0, 60.0);
    let panel_width = (width - 3.0 * margin) / 2.0;
    let plot_height = height - 2.0 * margin - 70.0;
    let x_of = |i: usize| {
        if levels.len() > 1 {
            i as f64 / (levels.len() - 1) as f64 * panel_width
        } else {
            panel_width / 2.0
        }
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let panels: [(&str, Metric); 2] = [
        ("creates/s", |s| s.throughput),
        ("p99 latency, ms", |s| s.latency_ms[2]),
    ];
    for (p, (title, value)) in panels.iter().enumerate() {
        let left = margin + p as f64 * (panel_width + margin);
        let top = margin;
        let max = rows
            .iter()
            .filter(|r| SERIES.iter().any(|(line, _)| *line == r.line))
            .map(|r| value(&r.summary))
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="14" text-anchor="middle">{title}</text>"#,
            left + panel_width / 2.0,
            top - 20.0
        );
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
            top + plot_height,
            left + panel_width,
            top + plot_height,
            top + plot_height
        );
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let y = top + plot_height - v / max * plot_height;
            let label = if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            };
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end">{label}</text><line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
                left - 5.0,
                y + 4.0,
                left + panel_width
            );
        }
        for (i, level) in levels.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{level}</text>"#,
                left + x_of(i),
                top + plot_height + 16.0
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">concurrency</text>"#,
            left + panel_width / 2.0,
            top + plot_height + 32.0
        );
        for (line, color) in SERIES {
            let points: Vec<String> = levels
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| {
                    find(rows, line, c).map(|s| {
                        format!(
                            "{:.1},{:.1}",
                            left + x_of(i),
                            top + plot_height - value(s) / max * plot_height
                        )
                    })
                })
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            for point in &points {
                let (x, y) = point.split_once(',').unwrap_or_default();
                let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
        }
    }
    for (i, (line, color)) in SERIES.iter().enumerate() {
        let x = margin + (i % 3) as f64 * 290.0;
        let y = height - 40.0 + (i / 3) as f64 * 20.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{y}">{line}</text>"#,
            y - 6.0,
            x + 20.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
