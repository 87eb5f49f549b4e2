//! Line charts as PNG for training curves and evaluation plots (ROC with a log FAR axis, CMC,
//! score histograms as step lines). Deliberately small: axes with "nice" ticks, a legend, a
//! built-in 5x7 font, so charts render the same on any machine without system fonts.

mod font;

use std::path::Path;

use image::{Rgb, RgbImage};

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Every point was NaN or infinite, or there were none.
    #[error("chart has no finite points to draw")]
    Empty,
    /// Encoding or writing the PNG failed.
    #[error("{path}: {reason}")]
    Write {
        /// The PNG's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's label.
    pub name: String,
    /// `(x, y)` in data units; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// RGB.
    pub color: [u8; 3],
}

/// Colours for successive series (colour-blind friendly: Okabe-Ito).
pub const PALETTE: [[u8; 3]; 6] = [
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [230, 159, 0],
    [86, 180, 233],
];

impl Series {
    /// A series coloured by its position in the chart.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, index: usize) -> Self {
        Self {
            name: name.into(),
            points,
            color: PALETTE[index % PALETTE.len()],
        }
    }
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Printed above the plot.
    pub title: String,
    /// Axis titles.
    pub x_label: String,
    /// Axis titles.
    pub y_label: String,
    /// The lines, drawn in order.
    pub series: Vec<Series>,
    /// Logarithmic x axis (ROC curves over FAR); points with x <= 0 are left out.
    pub log_x: bool,
    /// Logarithmic y axis (learning rates); points with y <= 0 are left out.
    pub log_y: bool,
    /// Fixed y range instead of the data's.
    pub y_range: Option<(f64, f64)>,
    /// Legend in the bottom-right corner instead of the top-right (curves that rise to the top,
    /// like ROC curves).
    pub legend_bottom: bool,
    /// Image size in pixels (800 x 500 by default).
    pub width: u32,
    /// Image size in pixels.
    pub height: u32,
}

impl Chart {
    /// An empty 800 x 500 chart with linear axes.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            log_x: false,
            log_y: false,
            y_range: None,
            legend_bottom: false,
            width: 800,
            height: 500,
        }
    }

    /// Adds a line.
    pub fn with_series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// The points as drawn: on log axes, log10 of the value; non-finite ones dropped.
    fn projected(&self) -> Vec<Vec<(f64, f64)>> {
        let axis = |v: f64, log: bool| match log {
            true if v > 0.0 => Some(v.log10()),
            true => None,
            false => Some(v),
        };
        self.series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter_map(|&(x, y)| Some((axis(x, self.log_x)?, axis(y, self.log_y)?)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect()
            })
            .collect()
    }

    /// Draws the chart.
    pub fn render(&self) -> Result<RgbImage, PlotError> {
        let lines = self.projected();
        let all: Vec<(f64, f64)> = lines.iter().flatten().copied().collect();
        if all.is_empty() {
            return Err(PlotError::Empty);
        }
        let span = |values: &mut dyn Iterator<Item = f64>| {
            values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
        };
        let x_range = widen(span(&mut all.iter().map(|p| p.0)));
        let y_range = match (self.y_range, self.log_y) {
            (Some((lo, hi)), false) => (lo, hi),
            (Some((lo, hi)), true) => (lo.max(1e-300).log10(), hi.max(1e-300).log10()),
            (None, _) => widen(span(&mut all.iter().map(|p| p.1))),
        };

        let (w, h) = (self.width.max(200), self.height.max(150));
        let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        let (left, right, top, bottom) = (78i64, w as i64 - 20, 36i64, h as i64 - 52);
        let to_px = |(x, y): (f64, f64)| {
            let fx = (x - x_range.0) / (x_range.1 - x_range.0);
            let fy = (y - y_range.0) / (y_range.1 - y_range.0);
            (
                left as f64 + fx * (right - left) as f64,
                bottom as f64 - fy * (bottom - top) as f64,
            )
        };

        // Grid and tick labels.
        let grid = Rgb([228, 228, 228]);
        let ink = Rgb([40, 40, 40]);
        for t in ticks(x_range, self.log_x) {
            let (px, _) = to_px((t, y_range.0));
            line(&mut img, (px, top as f64), (px, bottom as f64), grid, 1);
            let label = tick_label(t, self.log_x);
            let lw = text_width(&label, 1) as f64;
            text(&mut img, &label, (px - lw / 2.0) as i64, bottom + 8, 1, ink);
        }
        for t in ticks(y_range, self.log_y) {
            let (_, py) = to_px((x_range.0, t));
            line(&mut img, (left as f64, py), (right as f64, py), grid, 1);
            let label = tick_label(t, self.log_y);
            let lw = text_width(&label, 1) as i64;
            text(&mut img, &label, left - 6 - lw, py as i64 - 3, 1, ink);
        }
        // Axes box.
        for (a, b) in [
            ((left, top), (right, top)),
            ((right, top), (right, bottom)),
            ((right, bottom), (left, bottom)),
            ((left, bottom), (left, top)),
        ] {
            line(
                &mut img,
                (a.0 as f64, a.1 as f64),
                (b.0 as f64, b.1 as f64),
                ink,
                1,
            );
        }
        // Titles.
        let tw = text_width(&self.title, 2) as i64;
        text(&mut img, &self.title, (w as i64 - tw) / 2, 10, 2, ink);
        let xw = text_width(&self.x_label, 1) as i64;
        text(
            &mut img,
            &self.x_label,
            (left + right - xw) / 2,
            h as i64 - 20,
            1,
            ink,
        );
        text_vertical(&mut img, &self.y_label, 10, (top + bottom) / 2, ink);

        // Lines, clipped to the plot area.
        for (series, points) in self.series.iter().zip(&lines) {
            let color = Rgb(series.color);
            let clip = |p: (f64, f64)| {
                (
                    p.0.clamp(left as f64, right as f64),
                    p.1.clamp(top as f64, bottom as f64),
                )
            };
            if points.len() == 1 {
                let p = clip(to_px(points[0]));
                line(&mut img, (p.0 - 2.0, p.1), (p.0 + 2.0, p.1), color, 3);
            }
            for pair in points.windows(2) {
                line(
                    &mut img,
                    clip(to_px(pair[0])),
                    clip(to_px(pair[1])),
                    color,
                    2,
                );
            }
        }
        // Legend, top right, when more than one series or a named one.
        let named: Vec<&Series> = self.series.iter().filter(|s| !s.name.is_empty()).collect();
        let widest = named
            .iter()
            .map(|s| text_width(&s.name, 1))
            .max()
            .unwrap_or(0) as i64;
        for (k, s) in named.iter().enumerate() {
            let y = if self.legend_bottom {
                bottom - 10 - 14 * (named.len() - k) as i64
            } else {
                top + 10 + 14 * k as i64
            };
            let x = right - widest - 34;
            line(
                &mut img,
                (x as f64, y as f64 + 3.0),
                (x as f64 + 18.0, y as f64 + 3.0),
                Rgb(s.color),
                3,
            );
            text(&mut img, &s.name, x + 24, y, 1, ink);
        }
        Ok(img)
    }

    /// Renders and writes a PNG (through a temporary file and a rename).
    pub fn save_png(&self, path: &Path) -> Result<(), PlotError> {
        let img = self.render()?;
        let err = |reason: String| PlotError::Write {
            path: path.display().to_string(),
            reason,
        };
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| err(e.to_string()))?;
        atomic_file::write(path, png.get_ref()).map_err(|e| err(e.to_string()))
    }
}

/// A range with a little room, never empty.
fn widen((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * 0.04;
        (lo - pad, hi + pad)
    } else {
        let pad = lo.abs().max(1.0) * 0.05;
        (lo - pad, hi + pad)
    }
}

/// Tick positions: 1-2-5 steps; on log axes, whole decades.
pub fn ticks((lo, hi): (f64, f64), log: bool) -> Vec<f64> {
    if log {
        let (a, b) = (lo.ceil() as i64, hi.floor() as i64);
        let every = ((b - a) / 8 + 1).max(1);
        return (a..=b)
            .filter(|d| (d - a) % every == 0)
            .map(|d| d as f64)
            .collect();
    }
    let raw = (hi - lo) / 6.0;
    let exponent = raw.log10().floor() as i32;
    let mantissa = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| m * 10f64.powi(exponent) >= raw)
        .unwrap_or(10.0);
    // k * mantissa scaled by the power of ten in one rounding, so 0.2 * 3 prints as 0.6.
    let at = |k: i64| match exponent {
        e if e < 0 => k as f64 * mantissa / 10f64.powi(-e),
        e => k as f64 * mantissa * 10f64.powi(e),
    };
    let step = mantissa * 10f64.powi(exponent);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(at).collect()
}

/// A compact label: decimals as needed, scientific for very small or large values; log ticks
/// as the power of ten.
pub fn tick_label(t: f64, log: bool) -> String {
    if log {
        return format!("1e{}", t.round() as i64);
    }
    let a = t.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        return format!("{t:.0e}");
    }
    let s = format!("{t:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn text_width(s: &str, scale: u32) -> u32 {
    s.chars().count() as u32 * font::ADVANCE * scale
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

fn text(img: &mut RgbImage, s: &str, x: i64, y: i64, scale: u32, color: Rgb<u8>) {
    let scale = scale as i64;
    for (k, c) in s.chars().enumerate() {
        let g = font::glyph(c);
        let x0 = x + k as i64 * font::ADVANCE as i64 * scale;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x0 + col * scale + dx,
                                y + row as i64 * scale + dy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Text rotated a quarter turn anticlockwise, centred on `cy` (y-axis titles).
fn text_vertical(img: &mut RgbImage, s: &str, x: i64, cy: i64, color: Rgb<u8>) {
    let len = text_width(s, 1) as i64;
    for (k, c) in s.chars().enumerate() {
        let g = font::glyph(c);
        let y0 = cy + len / 2 - k as i64 * font::ADVANCE as i64;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    put(img, x + row as i64, y0 - col, color);
                }
            }
        }
    }
}

/// A straight line `width` pixels thick.
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), color: Rgb<u8>, width: i64) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as i64).max(1);
    let half = width / 2;
    for i in 0..=steps {
        let f = i as f64 / steps as f64;
        let x = (a.0 + (b.0 - a.0) * f).round() as i64;
        let y = (a.1 + (b.1 - a.1) * f).round() as i64;
        for dy in -half..width - half {
            for dx in -half..width - half {
                put(img, x + dx, y + dy, color);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_inside_the_range() {
        assert_eq!(ticks((0.0, 1.0), false), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            ticks((-6.2, -0.5), true),
            vec![-6.0, -5.0, -4.0, -3.0, -2.0, -1.0]
        );
        let t = ticks((0.83, 0.97), false);
        assert!(
            t.iter().all(|v| (0.83..=0.97).contains(v)) && t.len() >= 3,
            "{t:?}"
        );
        assert_eq!(tick_label(0.25, false), "0.25");
        assert_eq!(tick_label(300.0, false), "300");
        assert_eq!(tick_label(-3.0, true), "1e-3");
        assert_eq!(tick_label(1e-5, false), "1e-5");
    }

    #[test]
    fn draws_each_series_in_its_colour_and_refuses_an_empty_chart() {
        let chart = Chart::new("Loss", "step", "loss")
            .with_series(Series::new("train", vec![(0.0, 5.0), (10.0, 1.0)], 0))
            .with_series(Series::new("val", vec![(0.0, 4.0), (10.0, 2.0)], 1));
        let img = chart.render().unwrap();
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        assert!(count(PALETTE[0]) > 500 && count(PALETTE[1]) > 500);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("loss.png");
        chart.save_png(&path).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), img);
        let empty =
            Chart::new("x", "x", "y").with_series(Series::new("nan", vec![(0.0, f64::NAN)], 0));
        assert!(matches!(empty.render(), Err(PlotError::Empty)));
        // A log axis drops what it cannot show instead of failing.
        let mut log = Chart::new("lr", "step", "lr").with_series(Series::new(
            "",
            vec![(0.0, 0.0), (1.0, 0.1), (2.0, 0.01)],
            0,
        ));
        log.log_y = true;
        assert!(log.render().is_ok());
    }
}
