//! Plain SVG charts (bars, grouped or stacked; lines), written by hand: a few dozen elements each, no
//! fonts to find, byte-for-byte deterministic for the same numbers.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound and tick step for values up to `max`.
fn scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn frame(out: &mut String, title: &str, y_label: &str, top: f64, step: f64) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{x}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{t}</text>
<text x="16" y="{ym}" text-anchor="middle" transform="rotate(-90 16 {ym})">{yl}</text>
"##,
        x = (LEFT + W - RIGHT) / 2.0,
        t = esc(title),
        ym = (TOP + H - BOTTOM) / 2.0,
        yl = esc(y_label),
    );
    let plot_h = H - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = H - BOTTOM - v / top * plot_h;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = trim_num(v),
        );
        v += step;
    }
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{b}" x2="{x2}" y2="{b}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#333"/>"##,
        b = H - BOTTOM,
        x2 = W - RIGHT,
    );
}

fn legend(out: &mut String, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let _ = writeln!(
            out,
            r##"<rect x="{x}" y="{y}" width="12" height="12" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text>"##,
            x = W - RIGHT + 15.0,
            c = COLORS[i % COLORS.len()],
            tx = W - RIGHT + 32.0,
            ty = y + 10.0,
            n = esc(n),
        );
    }
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A bar chart: one group per category, one bar per series (side by side, or stacked).
pub fn bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    stacked: bool,
) -> String {
    let max = (0..categories.len())
        .map(|c| {
            let vals = series.iter().map(|(_, v)| v.get(c).copied().unwrap_or(0.0));
            if stacked {
                vals.sum::<f64>()
            } else {
                vals.fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max);
    let (top, step) = scale(max);
    let mut out = String::new();
    frame(&mut out, title, y_label, top, step);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let group_w = plot_w / categories.len().max(1) as f64;
    let per = if stacked { 1 } else { series.len().max(1) };
    let bar_w = (group_w * 0.7) / per as f64;
    for (c, cat) in categories.iter().enumerate() {
        let gx = LEFT + c as f64 * group_w + group_w * 0.15;
        let mut base = 0.0;
        for (s, (_, vals)) in series.iter().enumerate() {
            let v = vals.get(c).copied().unwrap_or(0.0);
            let h = v / top * plot_h;
            let x = if stacked { gx } else { gx + s as f64 * bar_w };
            let y = H - BOTTOM - base / top * plot_h - h;
            let _ = writeln!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{col}"><title>{t}</title></rect>"##,
                w = bar_w,
                col = COLORS[s % COLORS.len()],
                t = trim_num(v),
            );
            if stacked {
                base += v;
            }
        }
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{y}" text-anchor="middle">{c}</text>"##,
            x = LEFT + (c as f64 + 0.5) * group_w,
            y = H - BOTTOM + 18.0,
            c = esc(cat),
        );
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

/// A line chart of (x, y) points per series; `x_label` under the axis.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(0.0, f64::max);
    let (top, step) = scale(ymax);
    let (right, xstep) = scale(xmax);
    let mut out = String::new();
    frame(&mut out, title, y_label, top, step);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= right + xstep / 2.0 {
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{y}" text-anchor="middle">{v}</text>"##,
            x = LEFT + v / right * plot_w,
            y = H - BOTTOM + 16.0,
            v = trim_num(v),
        );
        v += xstep;
    }
    let _ = writeln!(
        out,
        r##"<text x="{x}" y="{y}" text-anchor="middle">{l}</text>"##,
        x = LEFT + plot_w / 2.0,
        y = H - 16.0,
        l = esc(x_label),
    );
    for (s, (_, pts)) in series.iter().enumerate() {
        let d: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + x / right * plot_w,
                    H - BOTTOM - y / top * plot_h
                )
            })
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"##,
            d.join(" "),
            COLORS[s % COLORS.len()]
        );
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_scale() {
        assert_eq!(scale(87.0), (100.0, 20.0));
        assert_eq!(scale(0.0), (1.0, 0.2));
        assert_eq!(scale(3.3), (4.0, 1.0));
    }

    #[test]
    fn bars_are_well_formed() {
        let s = bars(
            "t <x>",
            "s",
            &["1".into(), "2".into()],
            &[("a".into(), vec![1.0, 2.0]), ("b".into(), vec![0.5, 0.5])],
            true,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("t &lt;x&gt;"));
        assert_eq!(s.matches("<rect x=").count(), 4 + 2);
    }
}
