//! SVG figures: a figure is a row of panels, each a grouped bar chart or a line chart, drawn with
//! plotters' SVG backend (no font or image system library: text is emitted as SVG `<text>` and
//! laid out with plotters' built-in size estimate). Every series name appears in the legend.

use std::ops::Range;
use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// Pixel size of one panel.
const PANEL: (u32, u32) = (560, 400);

/// Series colours, in order (colour-blind safe, Okabe-Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// A named series of values: one per category (bars) or one per point (lines).
#[derive(Clone, Debug)]
pub struct Series<T> {
    pub name: String,
    pub values: Vec<T>,
}

impl<T> Series<T> {
    pub fn new(name: impl Into<String>, values: Vec<T>) -> Self {
        Series { name: name.into(), values }
    }
}

/// What one panel shows.
#[derive(Clone, Debug)]
pub enum Chart {
    /// Grouped bars: for each category, one bar per series (`NaN` = no bar).
    Bars { categories: Vec<String>, series: Vec<Series<f64>> },
    /// Lines through `(x, y)` points, one per series.
    Lines { x_label: String, series: Vec<Series<(f64, f64)>> },
}

/// One panel: a title, a y axis and a chart.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    /// Logarithmic y axis (values <= 0 are drawn at the axis' floor).
    pub log_y: bool,
    /// Logarithmic x axis (lines only; points with x <= 0 are left out).
    pub log_x: bool,
    /// The legend in the upper left corner (default: upper right), for lines that rise.
    pub legend_left: bool,
    pub chart: Chart,
}

impl Panel {
    /// Grouped bars.
    pub fn bars(title: &str, y_label: &str, categories: Vec<String>, series: Vec<Series<f64>>) -> Self {
        Panel {
            title: title.into(),
            y_label: y_label.into(),
            log_y: false,
            log_x: false,
            legend_left: false,
            chart: Chart::Bars { categories, series },
        }
    }

    /// Lines.
    pub fn lines(title: &str, x_label: &str, y_label: &str, series: Vec<Series<(f64, f64)>>) -> Self {
        let chart = Chart::Lines { x_label: x_label.into(), series };
        Panel { title: title.into(), y_label: y_label.into(), log_y: false, log_x: false, legend_left: false, chart }
    }

    /// The same panel with a logarithmic y axis.
    pub fn log(mut self) -> Self {
        self.log_y = true;
        self
    }

    /// The same panel with a logarithmic x axis (lines).
    pub fn log_x(mut self) -> Self {
        self.log_x = true;
        self
    }

    /// The same panel with its legend in the upper left corner.
    pub fn legend_left(mut self) -> Self {
        self.legend_left = true;
        self
    }

    fn ys(&self) -> Vec<f64> {
        let ys: Vec<f64> = match &self.chart {
            Chart::Bars { series, .. } => series.iter().flat_map(|s| s.values.iter().copied()).collect(),
            Chart::Lines { series, .. } => series.iter().flat_map(|s| s.values.iter().map(|p| p.1)).collect(),
        };
        ys.into_iter().filter(|y| y.is_finite()).collect()
    }

    /// The x range of a line chart: the points' span (log: the positive points').
    fn x_range(&self) -> Range<f64> {
        let Chart::Lines { series, .. } = &self.chart else { return 0.0..1.0 };
        let xs = series.iter().flat_map(|s| s.values.iter().map(|p| p.0));
        let xs = xs.filter(|x| x.is_finite() && (!self.log_x || *x > 0.0));
        let (lo, hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        match (lo < hi, self.log_x) {
            (true, false) => lo..hi,
            (true, true) => lo / 1.5..hi * 1.5,
            (false, _) if lo == hi => lo * 0.5..(lo * 1.5).max(lo + 1.0),
            (false, _) => 1.0..10.0,
        }
    }

    /// The y range: from 0 (linear) or a decade below the smallest positive value (log) to
    /// above the largest, with room for the legend.
    fn y_range(&self) -> Range<f64> {
        let ys = self.ys();
        let hi = ys.iter().copied().fold(0.0, f64::max);
        if self.log_y {
            let lo = ys.iter().copied().filter(|&y| y > 0.0).fold(f64::MAX, f64::min);
            let lo = if lo == f64::MAX { 0.1 } else { 10f64.powf(lo.log10().floor()) };
            lo..(hi * 10.0).max(lo * 100.0)
        } else {
            0.0..if hi > 0.0 { hi * 1.3 } else { 1.0 }
        }
    }
}

/// Write `panels` as an SVG file at `path`: up to 3 panels in a row (4 as 2 x 2).
pub fn write_svg(path: &Path, title: &str, panels: &[Panel]) -> anyhow::Result<()> {
    let n = panels.len().max(1);
    let cols = if n == 4 { 2 } else { n.min(3) };
    let grid = (n.div_ceil(cols), cols);
    let size = (PANEL.0 * grid.1 as u32, PANEL.1 * grid.0 as u32 + 40);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    for (area, panel) in root.split_evenly(grid).iter().zip(panels) {
        let y = panel.y_range();
        let drawn = match (panel.log_y, panel.log_x) {
            (true, true) => draw(area, panel, y.log_scale(), panel.x_range().log_scale()),
            (true, false) => draw(area, panel, y.log_scale(), panel.x_range()),
            (false, true) => draw(area, panel, y, panel.x_range().log_scale()),
            (false, false) => draw(area, panel, y, panel.x_range()),
        };
        drawn.map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw<Y, X>(area: &Area<'_>, panel: &Panel, y: Y, x: X) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    match &panel.chart {
        Chart::Bars { categories, series } => bars(area, panel, categories, series, y),
        Chart::Lines { x_label, series } => lines(area, panel, x_label, series, y, x),
    }
}

fn bars<Y>(area: &Area<'_>, panel: &Panel, categories: &[String], series: &[Series<f64>], y: Y) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    // Category i is centred on x = i; ticks fall on integers (labelled) and maybe halves (not).
    let n = categories.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, y)?;
    let floor = chart.y_range().start;
    let label = |x: &f64| {
        let i = x.round();
        let on_centre = (x - i).abs() < 1e-6 && i >= 0.0;
        on_centre.then(|| categories.get(i as usize).cloned()).flatten().unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 2)
        .x_label_formatter(&label)
        .y_desc(&panel.y_label)
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, s) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let bar = |(i, &v): (usize, &f64)| {
            let x0 = i as f64 - 0.4 + k as f64 * width;
            Rectangle::new([(x0, floor), (x0 + width * 0.95, v.max(floor))], colour.filled())
        };
        let drawn = s.values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(bar);
        chart
            .draw_series(drawn)?
            .label(&s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    legend(&mut chart, panel.legend_left)
}

fn lines<Y, X>(area: &Area<'_>, panel: &Panel, x_label: &str, series: &[Series<(f64, f64)>], y: Y, x: X) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    let floor = chart.y_range().start;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let shown = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite() && (!panel.log_x || p.0 > 0.0);
        let points: Vec<(f64, f64)> = s.values.iter().filter(shown).map(|&(x, y)| (x, y.max(floor))).collect();
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2)));
    }
    legend(&mut chart, panel.legend_left)
}

fn legend<'a, X, Y>(chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>, left: bool) -> DrawResult
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(if left { SeriesLabelPosition::UpperLeft } else { SeriesLabelPosition::UpperRight })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()
}

/// A tick label: at most 3 significant digits, with k/M suffixes.
fn short(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = match a {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = match x.abs() {
        a if a == 0.0 || a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{x:.digits$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1.5), "1.50");
        assert_eq!(short(250.0), "250");
        assert_eq!(short(12_500.0), "12.5k");
        assert_eq!(short(1_300_000.0), "1.30M");
        assert_eq!(short(0.004), "0.004");
    }

    #[test]
    fn writes_an_svg_with_every_series_name() {
        let path = std::env::temp_dir().join(format!("dirigo-plot-{}.svg", std::process::id()));
        let bars = Panel::bars(
            "throughput",
            "events/s",
            vec!["a".into(), "b".into()],
            vec![Series::new("dirigo", vec![1.0, 2.0]), Series::new("timely", vec![3.0, f64::NAN])],
        );
        let lines = Panel::lines("p99", "lessees", "µs", vec![Series::new("laxity", vec![(0.0, 10.0), (1.0, 5.0)])]);
        write_svg(&path, "test", &[bars, lines.log()]).expect("svg written");
        let text = std::fs::read_to_string(&path).expect("svg file");
        let _ = std::fs::remove_file(&path);
        assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        for name in ["dirigo", "timely", "laxity", "throughput"] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
