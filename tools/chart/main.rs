//! `xvs-chart DIR`: BENCHMARKS.md's charts, drawn from a bench's summary.
//!
//! Reads `DIR/summary.csv`, the table `tools/bench` prints as one row per
//! case (its header names the columns; an empty field is a level that was
//! not measured; a leading `# ` line is the run's date and commit, used as
//! the caption), and writes `DIR/rate.svg` (each case's median maximum
//! rate, its runs' spread as a whisker) and `DIR/latency.svg` (one-way
//! p50/p99/p99.9 at 50% and 90% load, log scale).
//!
//! SVG through `plotters` without its font features: the text is SVG
//! `<text>` that the viewer sets, so no system font is read at build or run
//! time (plotters estimates text widths for the layout).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The columns `tools/bench` writes, in order.
const COLUMNS: &[&str] = &[
    "case",
    "mpps",
    "mpps_min",
    "mpps_max",
    "loss_pct",
    "lat50_p50_us",
    "lat50_p99_us",
    "lat50_p999_us",
    "lat50_loss_pct",
    "lat90_p50_us",
    "lat90_p99_us",
    "lat90_p999_us",
    "lat90_loss_pct",
];

/// One case of a bench: its maximum rate and, where measured, latency at
/// 50% and 90% load.
#[derive(Debug, PartialEq)]
struct Case {
    name: String,
    mpps: f64,
    min: f64,
    max: f64,
    loss_pct: f64,
    /// At 50% and at 90% of the maximum.
    latency: [Option<Latency>; 2],
}

/// One-way latency percentiles in microseconds.
#[derive(Debug, PartialEq)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

#[derive(Debug, PartialEq)]
struct Summary {
    caption: String,
    cases: Vec<Case>,
}

fn parse(text: &str) -> Result<Summary, String> {
    let mut caption = String::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let mut header = None;
    for (n, line) in lines.by_ref() {
        match line.strip_prefix('#') {
            Some(c) if caption.is_empty() => caption = c.trim().to_string(),
            Some(_) => {}
            None => {
                header = Some((n, line));
                break;
            }
        }
    }
    let Some((n, header)) = header else {
        return Err("no header line (case,mpps,...)".into());
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    if names != COLUMNS {
        return Err(format!(
            "line {}: the columns are {header:?}; xvs-chart reads {:?}",
            n + 1,
            COLUMNS.join(",")
        ));
    }
    let mut cases = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != COLUMNS.len() {
            return Err(format!(
                "line {}: {} fields, want {}",
                n + 1,
                f.len(),
                COLUMNS.len()
            ));
        }
        let num = |i: usize| -> Result<Option<f64>, String> {
            if f[i].is_empty() || f[i] == "-" {
                return Ok(None);
            }
            f[i].parse()
                .map(Some)
                .map_err(|_| format!("line {}: {} {:?} is not a number", n + 1, COLUMNS[i], f[i]))
        };
        let need = |i: usize| num(i)?.ok_or_else(|| format!("line {}: no {}", n + 1, COLUMNS[i]));
        let latency = |at: usize| -> Result<Option<Latency>, String> {
            Ok(match (num(at)?, num(at + 1)?, num(at + 2)?) {
                (Some(p50), Some(p99), Some(p999)) => Some(Latency { p50, p99, p999 }),
                _ => None,
            })
        };
        cases.push(Case {
            name: f[0].to_string(),
            mpps: need(1)?,
            min: need(2)?,
            max: need(3)?,
            loss_pct: need(4)?,
            latency: [latency(5)?, latency(9)?],
        });
    }
    if cases.is_empty() {
        return Err("no cases".into());
    }
    Ok(Summary { caption, cases })
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

const XVS: RGBColor = RGBColor(31, 119, 180);
const PEER: RGBColor = RGBColor(150, 150, 150);

fn colour(case: &str) -> RGBColor {
    if case.starts_with("xvs") {
        XVS
    } else {
        PEER
    }
}

fn segment_label(names: &[String]) -> impl Fn(&SegmentValue<usize>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Median maximum rate per case, bars, with the runs' min-max as whiskers.
fn draw_rate<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    s: &Summary,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let n = s.cases.len();
    let names: Vec<String> = s.cases.iter().map(|c| c.name.clone()).collect();
    let top = s
        .cases
        .iter()
        .map(|c| c.max.max(c.mpps))
        .fold(0.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Maximum rate, 64-byte frames: median of runs, min-max whiskers ({})",
                s.caption
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top.max(0.1))?;
    let label = segment_label(&names);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .x_label_style(("sans-serif", 12))
        .y_desc("Mpps (SYN cases: million connections/s)")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    chart.draw_series(s.cases.iter().enumerate().map(|(i, c)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), c.mpps),
            ],
            colour(&c.name)
                .mix(if c.name.ends_with("-syn") { 0.5 } else { 0.9 })
                .filled(),
        );
        bar.set_margin(0, 0, 8, 8);
        bar
    }))?;
    chart.draw_series(s.cases.iter().enumerate().map(|(i, c)| {
        PathElement::new(
            vec![
                (SegmentValue::CenterOf(i), c.min),
                (SegmentValue::CenterOf(i), c.max),
            ],
            BLACK.stroke_width(1),
        )
    }))?;
    let value = TextStyle::from(("sans-serif", 11)).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(s.cases.iter().enumerate().map(|(i, c)| {
        EmptyElement::at((SegmentValue::CenterOf(i), c.max.max(c.mpps)))
            + Text::new(format!("{:.3}", c.mpps), (0, -4), value.clone())
    }))?;
    root.present()?;
    Ok(())
}

/// p50, p99 and p99.9 per case at 50% and 90% load, side by side, log scale.
fn draw_latency<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    s: &Summary,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "One-way latency, generator to sink, median of runs ({})",
            s.caption
        ),
        ("sans-serif", 16),
    )?;
    let measured: Vec<&Case> = s
        .cases
        .iter()
        .filter(|c| c.latency.iter().any(Option::is_some))
        .collect();
    let names: Vec<String> = measured.iter().map(|c| c.name.clone()).collect();
    let (lo, hi) = latency_range(&measured);
    let panels = root.split_evenly((1, 2));
    for (at, (panel, load)) in panels.iter().zip(["50%", "90%"]).enumerate() {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("at {load} of the maximum"), ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (0..names.len().max(1)).into_segmented(),
                (lo..hi).log_scale(),
            )?;
        let label = segment_label(&names);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len().max(1))
            .x_label_formatter(&label)
            .x_label_style(("sans-serif", 11))
            .y_desc("µs (log)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let points = |pick: fn(&Latency) -> f64| {
            measured.iter().enumerate().filter_map(move |(i, c)| {
                c.latency[at]
                    .as_ref()
                    .map(|l| (SegmentValue::CenterOf(i), pick(l), colour(&c.name)))
            })
        };
        chart.draw_series(measured.iter().enumerate().filter_map(|(i, c)| {
            let l = c.latency[at].as_ref()?;
            Some(PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i), l.p50),
                    (SegmentValue::CenterOf(i), l.p999),
                ],
                colour(&c.name).stroke_width(2),
            ))
        }))?;
        chart
            .draw_series(points(|l| l.p50).map(|(x, y, c)| Circle::new((x, y), 5, c.filled())))?
            .label("p50")
            .legend(|(x, y)| Circle::new((x, y), 5, BLACK.filled()));
        chart
            .draw_series(
                points(|l| l.p99).map(|(x, y, c)| TriangleMarker::new((x, y), 6, c.filled())),
            )?
            .label("p99")
            .legend(|(x, y)| TriangleMarker::new((x, y), 6, BLACK.filled()));
        chart
            .draw_series(
                points(|l| l.p999).map(|(x, y, c)| Cross::new((x, y), 5, c.stroke_width(2))),
            )?
            .label("p99.9")
            .legend(|(x, y)| Cross::new((x, y), 5, BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The latency axis: whole decades from the lowest p50 to the highest
/// p99.9, at least 1 µs and one decade; 1-10 µs when nothing was measured
/// (a bench run without latency runs), so the axis is never empty.
fn latency_range(measured: &[&Case]) -> (f64, f64) {
    let all = measured.iter().flat_map(|c| c.latency.iter().flatten());
    let Some((lo, hi)) = all.fold(None, |acc: Option<(f64, f64)>, l| {
        let (lo, hi) = acc.unwrap_or((l.p50, l.p999));
        Some((lo.min(l.p50), hi.max(l.p999)))
    }) else {
        return (1.0, 10.0);
    };
    let lo = 10f64.powf(lo.max(1.0).log10().floor());
    let hi = 10f64.powf(hi.max(lo).log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// The charts of `summary`, as (file name, SVG text).
fn render(s: &Summary) -> Result<Vec<(&'static str, String)>, String> {
    let mut rate = String::new();
    draw_rate(
        SVGBackend::with_string(&mut rate, (1000, 420)).into_drawing_area(),
        s,
    )
    .map_err(|e| format!("drawing rate.svg: {e}"))?;
    let mut latency = String::new();
    draw_latency(
        SVGBackend::with_string(&mut latency, (1100, 440)).into_drawing_area(),
        s,
    )
    .map_err(|e| format!("drawing latency.svg: {e}"))?;
    Ok(vec![("rate.svg", rate), ("latency.svg", latency)])
}

fn run(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let path = dir.join("summary.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let summary = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut written = Vec::new();
    for (name, svg) in render(&summary)? {
        let out = dir.join(name);
        std::fs::write(&out, svg).map_err(|e| format!("{}: {e}", out.display()))?;
        written.push(out);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: xvs-chart DIR  (reads DIR/summary.csv, writes DIR/rate.svg and DIR/latency.svg)");
        return ExitCode::from(2);
    };
    match run(Path::new(dir)) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xvs-chart: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# 2026-11-27 20:27 UTC, commit 9de76e6
case,mpps,mpps_min,mpps_max,loss_pct,lat50_p50_us,lat50_p99_us,lat50_p999_us,lat50_loss_pct,lat90_p50_us,lat90_p99_us,lat90_p999_us,lat90_loss_pct
testpmd,0.404,0.359,0.501,6.5,25.6,1363,3856,0.0,45.9,8905,12378,5.4
xvs-dr,0.345,0.337,0.481,16.2,24.6,1421,6066,0.0,155,9953,14926,5.0
nft-syn,0.201,0.185,0.207,0.0,,,,,,,,
";

    #[test]
    fn parses_the_summary_tools_bench_writes() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.caption, "2026-11-27 20:27 UTC, commit 9de76e6");
        assert_eq!(s.cases.len(), 3);
        assert_eq!(s.cases[1].name, "xvs-dr");
        assert_eq!(s.cases[1].mpps, 0.345);
        assert_eq!(
            s.cases[1].latency[1],
            Some(Latency {
                p50: 155.0,
                p99: 9953.0,
                p999: 14926.0
            })
        );
        assert_eq!(s.cases[2].latency, [None, None]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse("case,mpps\nx,1\n").unwrap_err().contains("columns"));
        let short = SAMPLE.replace("xvs-dr,0.345,", "xvs-dr,");
        assert!(parse(&short).unwrap_err().contains("fields"));
        let bad = SAMPLE.replace("0.345", "fast");
        assert!(parse(&bad).unwrap_err().contains("not a number"));
    }

    #[test]
    fn draws_every_case_into_both_charts() {
        let charts = render(&parse(SAMPLE).unwrap()).unwrap();
        let [(rate_name, rate), (lat_name, lat)] = charts.as_slice() else {
            panic!("two charts");
        };
        assert_eq!((*rate_name, *lat_name), ("rate.svg", "latency.svg"));
        for case in ["testpmd", "xvs-dr", "nft-syn"] {
            assert!(
                rate.contains(&format!("\n{case}\n</text>")),
                "{case} in\n{rate}"
            );
        }
        assert!(rate.contains("\n0.345\n</text>"));
        // nft-syn has no latency runs: it is left out of the latency chart.
        assert!(lat.contains("\nxvs-dr\n</text>") && !lat.contains("\nnft-syn\n</text>"));
        assert!(lat.contains("p99.9"));
        assert!(rate.starts_with("<svg") && lat.starts_with("<svg"));
    }

    #[test]
    fn a_run_without_latency_runs_has_a_latency_axis_all_the_same() {
        // `--lat-runs 0`: no case has latency; the axis once went from
        // 1e308 down to 1 and drawing it never ended.
        let only_rate = "\
# now
case,mpps,mpps_min,mpps_max,loss_pct,lat50_p50_us,lat50_p99_us,lat50_p999_us,lat50_loss_pct,lat90_p50_us,lat90_p99_us,lat90_p999_us,lat90_loss_pct
testpmd,0.066,0.062,0.070,60.1,,,,,,,,
";
        let s = parse(only_rate).unwrap();
        assert_eq!(latency_range(&[]), (1.0, 10.0));
        let charts = render(&s).unwrap();
        assert_eq!(charts.len(), 2);
        let sample = parse(SAMPLE).unwrap();
        let measured: Vec<&Case> = sample.cases.iter().collect();
        assert_eq!(latency_range(&measured), (10.0, 100_000.0));
    }
}
