//! SVG pictures written beside the records: the latency percentile plot of
//! each configuration, latency against throughput for a QPS sweep, and bars
//! with error bars for any other sweep.
//!
//! The percentile plot uses HdrHistogram's axis: x = log10(1 / (1 - q)), so
//! p90, p99, p99.9 are evenly spaced and the tail gets the room it deserves.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Colours that stay apart in print and for common colour blindness
/// (Okabe & Ito's palette).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

fn plot_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Highest x of the percentile plot: log10(1 / (1 - 0.99999)) = 5 nines.
const MAX_NINES: f64 = 5.0;

/// (x = nines, latency in µs) points of one histogram, p0 up to its max.
pub fn percentile_curve(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    let count = hist.len() as f64;
    // The deepest quantile the samples can show: 1 - 1/count.
    let deepest = (count.log10()).min(MAX_NINES);
    let steps = 200;
    (0..=steps)
        .map(|i| {
            let nines = deepest * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            (
                nines,
                hist.value_at_quantile(q).min(hist.max()) as f64 / 1e3,
            )
        })
        .collect()
}

fn nines_label(x: &f64) -> String {
    let q = format!("{:.4}", 100.0 * (1.0 - 10f64.powf(-x)));
    format!("{}%", q.trim_end_matches('0').trim_end_matches('.'))
}

/// One line per configuration: latency (µs, log scale) against percentile.
pub fn percentile_plot(
    path: &Path,
    title: &str,
    series: &[(String, &Histogram<u64>)],
) -> Result<(), PlotError> {
    let err = plot_err(path);
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, h)| (label.clone(), percentile_curve(h)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.last().map(|p| p.0))
        .fold(2.0f64, f64::max)
        .ceil();
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        ((lo * 0.8).max(1e-3), hi * 1.25)
    } else {
        (1.0, 10.0)
    };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us, log)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&nines_label)
        .draw()
        .map_err(&err)?;
    for (i, (label, curve)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(&err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)
}

/// One point of a QPS sweep: achieved throughput and its latencies (µs).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadPoint {
    pub offered_qps: f64,
    pub achieved_tps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// p50 and p99 latency against achieved throughput: the knee is where the
/// system stops keeping up.
pub fn latency_vs_throughput(
    path: &Path,
    title: &str,
    points: &[LoadPoint],
) -> Result<(), PlotError> {
    let err = plot_err(path);
    let mut pts = points.to_vec();
    pts.sort_by(|a, b| a.offered_qps.total_cmp(&b.offered_qps));
    let x_max = pts.iter().map(|p| p.achieved_tps).fold(1.0, f64::max) * 1.1;
    let y_max = pts.iter().map(|p| p.p99_us).fold(1.0, f64::max) * 1.2;
    let y_min = pts
        .iter()
        .map(|p| p.p50_us)
        .fold(f64::INFINITY, f64::min)
        .max(1e-3)
        * 0.8;
    let y_min = if y_min.is_finite() && y_min < y_max {
        y_min
    } else {
        y_max / 100.0
    };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (req/s)")
        .y_desc("latency (us, log)")
        .draw()
        .map_err(&err)?;
    for (i, (label, get)) in [
        ("p50", (|p: &LoadPoint| p.p50_us) as fn(&LoadPoint) -> f64),
        ("p99", |p: &LoadPoint| p.p99_us),
    ]
    .into_iter()
    .enumerate()
    {
        let color = PALETTE[i];
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.achieved_tps, get(p))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(&err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                line.into_iter()
                    .map(|(x, y)| Circle::new((x, y), 4, color.filled())),
            )
            .map_err(&err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)
}

/// One bar: a configuration's median with its min..max over the repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

/// Bars with error bars (min..max over repeats) for one metric of a sweep.
pub fn bars(path: &Path, title: &str, y_desc: &str, bars: &[Bar]) -> Result<(), PlotError> {
    let err = plot_err(path);
    let n = bars.len().max(1);
    let y_max = bars
        .iter()
        .map(|b| b.high.max(b.median))
        .fold(0.0f64, f64::max)
        * 1.2;
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    let root = SVGBackend::new(path, (640, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..y_max)
        .map_err(&err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(&err)?;
    for (i, b) in bars.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let x0 = i as f64 + 0.2;
        let x1 = i as f64 + 0.8;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, b.median)],
                color.mix(0.7).filled(),
            )))
            .map_err(&err)?;
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                i as f64 + 0.5,
                b.low,
                b.median,
                b.high,
                BLACK.stroke_width(2),
                12,
            )))
            .map_err(&err)?;
    }
    root.present().map_err(&err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stats::latency_histogram;

    #[test]
    fn draws_all_three_kinds() {
        let dir = std::env::temp_dir().join(format!("pinned-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = latency_histogram();
        for v in 1..=5000u64 {
            h.record(10_000 + v * 7).unwrap();
        }
        let p = dir.join("p.svg");
        percentile_plot(&p, "latency by percentile", &[("a".to_owned(), &h)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("polyline"),
            "{}",
            &text[..200.min(text.len())]
        );
        let q = dir.join("q.svg");
        let pts = [
            LoadPoint {
                offered_qps: 100.0,
                achieved_tps: 99.0,
                p50_us: 50.0,
                p99_us: 80.0,
            },
            LoadPoint {
                offered_qps: 200.0,
                achieved_tps: 198.0,
                p50_us: 60.0,
                p99_us: 300.0,
            },
        ];
        latency_vs_throughput(&q, "qps", &pts).unwrap();
        let b = dir.join("b.svg");
        bars(
            &b,
            "p99",
            "us",
            &[
                Bar {
                    label: "on".into(),
                    median: 10.0,
                    low: 9.0,
                    high: 11.0,
                },
                Bar {
                    label: "off".into(),
                    median: 12.0,
                    low: 10.0,
                    high: 15.0,
                },
            ],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&b).unwrap().contains("rect"));
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
        assert_eq!(nines_label(&1.0), "90%");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
