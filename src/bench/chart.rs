//! PNG bar charts of benchmark results (plotters, bitmap backend; text drawn with the DejaVu
//! Sans font from the system — `fonts-dejavu-core` on Debian).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn ensure_font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONT_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                format!("no DejaVuSans.ttf in {FONT_PATHS:?} (install fonts-dejavu-core)")
            })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "invalid font".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One panel: a title, a y-axis label and one value per category.
pub struct Panel<'a> {
    /// panel title
    pub title: &'a str,
    /// values per category
    pub values: Vec<f64>,
}

/// Draws side-by-side bar panels over the same categories into a PNG.
pub fn bars(path: &Path, title: &str, categories: &[String], panels: &[Panel]) -> Result<()> {
    ensure_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let w = 520 * panels.len() as u32;
    let root = BitMapBackend::new(path, (w, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((1, panels.len()));
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    for (area, panel) in areas.iter().zip(panels) {
        let max = panel.values.iter().cloned().fold(0.0, f64::max).max(1e-12) * 1.15;
        let n = categories.len();
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(110)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..max)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(panel.values.iter().enumerate().map(|(i, v)| {
                Rectangle::new(
                    [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                    colors[i % colors.len()].filled(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(panel.values.iter().enumerate().map(|(i, v)| {
                Text::new(
                    format!("{v:.3}"),
                    (i as f64 + 0.2, *v + max * 0.02),
                    ("sans-serif", 13),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
        let style = ("sans-serif", 13)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK);
        // Category names below the axis, drawn on the panel (the chart clips to its plot).
        for (i, c) in categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let (ax, ay) = area.get_base_pixel();
            area.draw(&Text::new(
                c.clone(),
                (x - ax + 7, y - ay + 8),
                style.clone(),
            ))
            .map_err(|e| anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
