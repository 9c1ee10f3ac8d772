//! `hm-bench hollow-plot`: draws the runs `hm-bench hollow --record FILE` appended
//! (one JSON line each) as a PNG: four panels against the number of hollow nodes —
//! apiserver RSS, apiserver CPU, API and watch delivery p99 under load, and scheduler
//! bindings/s. When several runs have the same number of nodes the last one is drawn.
//!
//! plotters draws with its bitmap backend only; text goes through `ab_glyph` with a
//! TrueType font read from disk (DejaVu Sans by default), so no fontconfig is needed.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use plotters::prelude::*;
use serde_json::Value;

/// Arguments of `hm-bench hollow-plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// JSON lines written by `hm-bench hollow --record`.
    #[arg(long, default_value = "bench/results/hollow.jsonl")]
    pub records: PathBuf,
    /// The PNG to write.
    #[arg(long, default_value = "bench/results/hollow.png")]
    pub out: PathBuf,
    /// A TrueType font for the labels.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

/// One series: a name, its colour, and (nodes, value) points.
struct Series {
    name: &'static str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

fn series(
    runs: &[Value],
    name: &'static str,
    colour: RGBColor,
    pick: impl Fn(&Value) -> Option<f64>,
) -> Series {
    // One point per node count: the last run recorded at that size (earlier ones stay
    // in the file as history).
    let mut latest: Vec<(f64, f64)> = Vec::new();
    for (nodes, value) in runs
        .iter()
        .filter_map(|r| Some((r.get("nodes")?.as_f64()?, pick(r)?)))
    {
        latest.retain(|p| p.0 != nodes);
        latest.push((nodes, value));
    }
    let mut points = latest;
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Series {
        name,
        colour,
        points,
    }
}

fn field(path: &'static [&'static str]) -> impl Fn(&Value) -> Option<f64> {
    move |v| {
        let mut at = v;
        for key in path {
            at = at.get(key)?;
        }
        at.as_f64()
    }
}

/// Draws the plot.
pub fn run(args: PlotArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.records)
        .with_context(|| format!("reading {}", args.records.display()))?;
    let runs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", args.records.display()))?;
    if runs.is_empty() {
        bail!("{} holds no runs", args.records.display());
    }
    let font = std::fs::read(&args.font)
        .with_context(|| format!("reading the font {}", args.font.display()))?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{} is not a usable TrueType font", args.font.display()))?;

    let panels: [(&str, Vec<Series>); 4] = [
        (
            "apiserver RSS (MiB)",
            vec![
                series(&runs, "idle", BLUE, field(&["idle", "apiserver_rss_mib"])),
                series(
                    &runs,
                    "with Instances",
                    RED,
                    field(&["steady", "apiserver_rss_mib"]),
                ),
            ],
        ),
        (
            "apiserver CPU (cores)",
            vec![
                series(
                    &runs,
                    "idle (heartbeats)",
                    BLUE,
                    field(&["idle", "apiserver_cores"]),
                ),
                series(
                    &runs,
                    "creating Instances",
                    RED,
                    field(&["load", "apiserver_cores"]),
                ),
            ],
        ),
        (
            "API p99 while loaded (ms)",
            vec![
                series(&runs, "Get node", BLUE, field(&["load", "get_p99_ms"])),
                series(
                    &runs,
                    "List 100 Instances",
                    RED,
                    field(&["load", "list_p99_ms"]),
                ),
                series(
                    &runs,
                    "Lease renew",
                    GREEN,
                    field(&["load", "lease_p99_ms"]),
                ),
                series(
                    &runs,
                    "watch delivery",
                    MAGENTA,
                    field(&["load", "watch_p99_ms"]),
                ),
            ],
        ),
        (
            "bindings/s and heartbeats/s",
            vec![
                series(&runs, "bindings/s", BLUE, field(&["bindings_per_s"])),
                series(
                    &runs,
                    "heartbeats/s (idle)",
                    RED,
                    field(&["idle", "heartbeats_per_s"]),
                ),
            ],
        ),
    ];

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let root = BitMapBackend::new(&args.out, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("drawing: {e}"))?;
    let root = root
        .titled(
            "hm-bench hollow: one hm-apiserver, N hollow nodes",
            ("sans-serif", 24),
        )
        .map_err(|e| anyhow!("drawing: {e}"))?;
    for (area, (title, lines)) in root.split_evenly((2, 2)).iter().zip(panels) {
        draw_panel(area, title, &lines).map_err(|e| anyhow!("drawing {title}: {e}"))?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    lines: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let points = lines.iter().flat_map(|s| s.points.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("hollow nodes")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if y_max >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .label_style(("sans-serif", 13))
        .draw()?;
    for s in lines.iter().filter(|s| !s.points.is_empty()) {
        let colour = s.colour;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}
