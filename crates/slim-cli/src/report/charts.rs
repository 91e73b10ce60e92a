//! The report's SVG charts, drawn with plotters.

use anyhow::{format_err, Result};
use plotters::prelude::*;
use slim_pipeline::RunSummary;
use std::path::Path;

/// `(label, parameters kept in millions, perplexity, is the dense model)` for the chart:
/// each run's pruned model on its first evaluated text, and the dense model once.
pub(super) fn ppl_points(runs: &[(String, RunSummary)]) -> Vec<(String, f64, f64, bool)> {
    let mut out = Vec::new();
    for (name, s) in runs {
        let Some((data, v)) = s.ppl.get_key_value("ptb-valid").or_else(|| s.ppl.iter().next()) else {
            continue;
        };
        if !out.iter().any(|p: &(String, f64, f64, bool)| p.3) {
            out.push((format!("dense ({data})"), s.params_before as f64 / 1e6, v.before.ppl, true));
        }
        out.push((name.clone(), s.params_after as f64 / 1e6, v.after.ppl, false));
    }
    out
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    format_err!("drawing a chart: {e}")
}

/// Perplexity (log scale) against parameters kept.
pub(super) fn ppl_vs_params(points: &[(String, f64, f64, bool)], path: &Path) -> Result<()> {
    scatter(points, path, "Perplexity against parameters kept", "perplexity (log scale)", true)
}

/// The seven-task zero-shot average against parameters.
pub(super) fn accuracy_vs_params(points: &[(String, f64, f64, bool)], path: &Path) -> Result<()> {
    scatter(points, path, "Zero-shot average against parameters", "seven-task average (%)", false)
}

/// Labelled points, the dense model in blue; a log y axis for perplexities.
fn scatter(points: &[(String, f64, f64, bool)], path: &Path, caption: &str, y_desc: &str, log_y: bool) -> Result<()> {
    let (ymin, ymax) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.2), b.max(p.2)));
    if log_y {
        scatter_on(points, path, caption, y_desc, (ymin * 0.8..ymax * 1.25).log_scale())
    } else {
        let pad = ((ymax - ymin) * 0.15).max(1.0);
        scatter_on(points, path, caption, y_desc, (ymin - pad)..(ymax + pad))
    }
}

fn scatter_on<Y>(points: &[(String, f64, f64, bool)], path: &Path, caption: &str, y_desc: &str, y: Y) -> Result<()>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (xmin, xmax) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((xmax - xmin) * 0.1).max(1.0);
    let mut c = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin - pad)..(xmax + pad), y)
        .map_err(err)?;
    c.configure_mesh().x_desc("parameters kept (millions)").y_desc(y_desc).draw().map_err(err)?;
    c.draw_series(points.iter().map(|(label, x, y, dense)| {
        let color = if *dense { BLUE } else { RED };
        EmptyElement::at((*x, *y))
            + Circle::new((0, 0), 5, color.filled())
            + Text::new(label.clone(), (7, -12), ("sans-serif", 11))
    }))
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Per-layer fractions of heads and channels kept; false when the run holds no plan.
pub(super) fn layers(name: &str, s: &RunSummary, path: &Path) -> Result<bool> {
    let layers = &s.layers;
    if layers.is_empty() {
        return Ok(false);
    }
    let hmax = layers.iter().map(|l| l.heads).max().unwrap_or(1).max(1) as f64;
    let cmax = layers.iter().map(|l| l.channels).max().unwrap_or(1).max(1) as f64;
    let n = layers.len();
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(format!("Kept per layer: {name}"), ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..1.05)
        .map_err(err)?;
    c.configure_mesh().x_desc("layer").y_desc("fraction kept").draw().map_err(err)?;
    let channels = layers.iter().map(|l| (l.layer as f64, l.channels as f64 / cmax));
    let heads = layers.iter().map(|l| (l.layer as f64, l.heads as f64 / hmax));
    c.draw_series(channels.map(|(x, y)| Rectangle::new([(x - 0.4, 0.0), (x, y)], RED.mix(0.6).filled())))
        .map_err(err)?
        .label("MLP channels")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], RED.mix(0.6).filled()));
    c.draw_series(heads.map(|(x, y)| Rectangle::new([(x, 0.0), (x + 0.4, y)], BLUE.mix(0.6).filled())))
        .map_err(err)?
        .label("query heads")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLUE.mix(0.6).filled()));
    c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)?;
    Ok(true)
}
