//! `--plot FILE.svg`: latency by percentile, HdrHistogram style (x = 1/(1−p) on a log
//! axis, labelled as percentiles, so the tail gets as much room as the median), one line
//! per operation type; for a sweep, one line per step, and below it throughput against
//! latency (p50, p99 and p99.9 by achieved ops/s).
//!
//! Drawn with plotters' SVG backend and no font backend (`default-features = false`):
//! plotters then estimates text sizes from the character count and the SVG backend
//! writes every label as an SVG `<text>` element that the viewer renders with its own
//! fonts, so no system font is read.

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{BenchReport, RunReport};
use super::workload::Operation;

const WIDTH: u32 = 960;
const CHART_HEIGHT: u32 = 540;
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// One named line of (x, y) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// The report as an SVG document.
pub fn svg(report: &BenchReport) -> Result<String, String> {
    let sweep = report.sweep.is_some();
    let height = if sweep {
        CHART_HEIGHT * 2
    } else {
        CHART_HEIGHT
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        if sweep {
            let (top, bottom) = root.split_vertically(CHART_HEIGHT);
            let series = report.runs.iter().map(step_series).collect();
            percentile_chart(&top, "Latency by percentile, per sweep step", series)?;
            throughput_chart(&bottom, &report.runs)?;
        } else {
            let run = report.runs.last().ok_or("no run to plot")?;
            percentile_chart(&root, "Latency by percentile", operation_series(run))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// (1/(1−p), latency in ms) for every percentile step of `h` below 100%.
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e6))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, ms)| (1.0 / (1.0 - q), ms))
        .collect()
}

fn operation_series(run: &RunReport) -> Vec<Series> {
    let mut series: Vec<Series> = Operation::ALL
        .iter()
        .map(|op| (op.name(), &run.stats.latencies[op.index()]))
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| Series {
            name: name.to_string(),
            points: percentile_points(h),
        })
        .collect();
    series.push(Series {
        name: "all".into(),
        points: percentile_points(&run.stats.all()),
    });
    series
}

fn step_series(run: &RunReport) -> Series {
    Series {
        name: format!("{:.0} ops/s", run.offered_ops_per_sec.unwrap_or(0.0)),
        points: percentile_points(&run.stats.all()),
    }
}

/// "99.9%" for x = 1000.
fn percentile_label(x: &f64) -> String {
    let p = (1.0 - 1.0 / x) * 100.0;
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn percentile_chart(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    series: Vec<Series>,
) -> Result<(), String> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x_max = points().map(|p| p.0).fold(10.0, f64::max) * 1.5;
    let y_max = points().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1/(1-p))")
        .y_desc("latency (ms)")
        .x_label_formatter(&percentile_label)
        .draw()
        .map_err(|e| e.to_string())?;
    draw_lines(&mut chart, series)
}

fn draw_lines<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    series: Vec<Series>,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, s) in series.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

fn throughput_chart(
    area: &DrawingArea<SVGBackend, Shift>,
    runs: &[RunReport],
) -> Result<(), String> {
    let line = |name: &str, q: f64| Series {
        name: name.to_string(),
        points: runs
            .iter()
            .map(|r| {
                (
                    r.throughput(),
                    r.stats.all().value_at_quantile(q) as f64 / 1e6,
                )
            })
            .collect(),
    };
    let series = vec![line("p50", 0.5), line("p99", 0.99), line("p99.9", 0.999)];
    let x_max = runs.iter().map(|r| r.throughput()).fold(1.0, f64::max) * 1.1;
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.001, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput vs latency (sweep)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (ops/s)")
        .y_desc("latency (ms)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_lines(&mut chart, series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::report::{tests::sample_report, SweepOutcome};

    /// Checks that every element opened is closed, in order (enough XML for an SVG).
    fn assert_balanced(svg: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = |t: &str| t.split_whitespace().next().unwrap_or("").to_string();
            if let Some(closing) = tag.strip_prefix('/') {
                let top = open
                    .pop()
                    .unwrap_or_else(|| panic!("</{closing}> closes nothing"));
                assert_eq!(name(top), name(closing));
            } else {
                open.push(tag);
            }
        }
        assert!(open.is_empty(), "left open: {open:?}");
    }

    #[test]
    fn percentile_labels_read_as_percentiles() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
    }

    #[test]
    fn the_svg_is_well_formed_with_its_series_and_text() {
        let report = sample_report();
        let svg = svg(&report).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_balanced(&svg);
        // One line per operation that ran, and "all"; labels are text elements.
        assert!(svg.matches("<polyline").count() >= 3, "{svg}");
        for text in [
            "read",
            "update",
            "all",
            "99%",
            "latency (ms)",
            "Latency by percentile",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        assert!(svg.contains("<text"));
    }

    #[test]
    fn a_sweep_adds_the_throughput_chart() {
        let mut report = sample_report();
        let step2 = RunReport {
            offered_ops_per_sec: Some(2000.0),
            elapsed: report.runs[0].elapsed,
            stats: Default::default(),
        };
        report.runs.push(step2);
        report.sweep = Some(SweepOutcome {
            p99_bound: std::time::Duration::from_millis(10),
            stopped: Some("test".into()),
        });
        let svg = svg(&report).unwrap();
        assert_balanced(&svg);
        for text in ["1000 ops/s", "2000 ops/s", "Throughput vs latency", "p99.9"] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
    }
}
