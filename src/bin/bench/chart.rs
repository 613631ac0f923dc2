//! SVG line charts for `sluice-bench`'s run reports: panels stacked in one image, each with
//! its axes, gridlines, labels and a legend. Hand-written because a chart is a few dozen
//! SVG elements here; a plotting crate would bring a font stack and image codecs into the
//! build for them.

use std::fmt::Write as _;

/// One line of a panel: its name in the legend and its (x, y) points, x ascending.
pub(crate) struct Line<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
}

/// One chart: a title, the unit of its y axis, its lines (sharing both axes).
pub(crate) struct Panel<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    pub lines: Vec<Line<'a>>,
}

const WIDTH: f64 = 760.0;
const PANEL_HEIGHT: f64 = 230.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 36.0;
const GRIDLINES: u32 = 4;
const COLOURS: [&str; 4] = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700"];

/// An axis end at or above `value` whose quarters are round: four times 1, 2, 2.5 or 5
/// times a power of ten.
fn axis_end(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 4.0;
    }
    let quarter = value / f64::from(GRIDLINES);
    let power = 10f64.powf(quarter.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|step| *step >= quarter)
        .unwrap_or(10.0 * power);
    step * f64::from(GRIDLINES)
}

/// A tick label without needless digits.
fn label(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1_000.0)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The panels, stacked, as one SVG document titled `title`; x is seconds into the run.
pub(crate) fn svg(title: &str, panels: &[Panel<'_>]) -> String {
    let height = 30.0 + PANEL_HEIGHT * panels.len() as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>
"##,
        escape(title)
    );
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(&mut out, panel, 30.0 + PANEL_HEIGHT * index as f64);
    }
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, panel: &Panel<'_>, top: f64) {
    let points = || panel.lines.iter().flat_map(|line| line.points.iter());
    let x_end = axis_end(points().map(|p| p.0).fold(0.0, f64::max));
    let y_end = axis_end(points().map(|p| p.1).fold(0.0, f64::max));
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, PANEL_HEIGHT - TOP - BOTTOM);
    let (x0, y0) = (LEFT, top + TOP);
    let x_of = |x: f64| x0 + x / x_end * plot_w;
    let y_of = |y: f64| y0 + plot_h - y / y_end * plot_h;
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-size="12" font-weight="bold">{} ({})</text>"#,
        top + 20.0,
        escape(panel.title),
        escape(panel.unit)
    );
    for step in 0..=GRIDLINES {
        let value = y_end * f64::from(step) / f64::from(GRIDLINES);
        let y = y_of(value);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d0d7de"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + plot_w,
            x0 - 6.0,
            y + 4.0,
            label(value)
        );
        let x_value = x_end * f64::from(step) / f64::from(GRIDLINES);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(x_value),
            y0 + plot_h + 16.0,
            label(x_value)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds into the run</text>"#,
        x0 + plot_w / 2.0,
        y0 + plot_h + 31.0
    );
    for (index, line) in panel.lines.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let mut path = String::new();
        for &(x, y) in line.points {
            let _ = write!(path, "{:.1},{:.1} ", x_of(x), y_of(y));
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"#,
            path.trim_end()
        );
        let legend_x = x0 + plot_w - 150.0 * (panel.lines.len() - index) as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            top + 14.0,
            legend_x + 16.0,
            top + 19.0,
            escape(line.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ends_have_round_quarters() {
        assert_eq!(axis_end(0.0), 4.0);
        assert_eq!(axis_end(3.2), 4.0);
        assert_eq!(axis_end(5.0), 8.0);
        assert_eq!(axis_end(9.0), 10.0);
        assert_eq!(axis_end(18_000.0), 20_000.0);
        assert_eq!(axis_end(51.0), 80.0);
    }

    #[test]
    fn a_chart_has_one_polyline_per_line_and_escapes_its_text() {
        let points = [(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)];
        let panels = [Panel {
            title: "rate <per second>",
            unit: "msg/s",
            lines: vec![
                Line {
                    name: "accepted",
                    points: &points,
                },
                Line {
                    name: "delivered & signed",
                    points: &points,
                },
            ],
        }];
        let svg = svg("run", &panels);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("rate &lt;per second&gt;"));
        assert!(svg.contains("delivered &amp; signed"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
