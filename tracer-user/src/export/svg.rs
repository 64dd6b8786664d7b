//! Flame graph SVGs, drawn by inferno from folded lines.
//!
//! Off-CPU graphs use inferno's blue "io" palette (Brendan Gregg's convention, so they are
//! not mistaken for CPU flame graphs) and count microseconds. Interpreted frames (Python
//! functions under `profile --python`) are drawn green instead, through inferno's palette
//! map, so they stand out from the native and kernel frames around them. inferno refuses empty input;
//! a capture with no off-CPU time is a valid result, so it gets a small SVG saying so
//! instead of an error.

use std::{
    collections::BTreeSet,
    io::{self, Write},
};

use inferno::flamegraph::{
    Options,
    color::{BasicPalette, Color, Palette, PaletteMap},
    from_lines,
};

/// Errors writing an SVG.
#[derive(Debug, thiserror::Error)]
pub enum SvgError {
    /// inferno failed, or the writer did.
    #[error("failed to write the flame graph SVG")]
    Write(#[source] io::Error),
}

/// Draws `lines` (folded stacks with microsecond values) as a flame graph titled `title`,
/// with an optional subtitle line (the command line that traced it); the frames named in
/// `interpreted` are drawn in green.
pub(crate) fn write_svg(
    lines: &[String],
    title: &str,
    subtitle: Option<&str>,
    interpreted: &BTreeSet<String>,
    mut w: impl Write,
) -> Result<(), SvgError> {
    let has_samples = lines.iter().any(|l| has_positive_count(l));
    if !has_samples {
        return write_empty_svg(title, subtitle, &mut w).map_err(SvgError::Write);
    }
    let mut opts = Options::default();
    opts.colors = Palette::Basic(BasicPalette::Io);
    opts.count_name = "us".into();
    opts.title = title.into();
    opts.subtitle = subtitle.map(str::to_owned);
    let mut palette = PaletteMap::default();
    for name in interpreted {
        palette.insert(name, interpreted_color(name));
    }
    if !interpreted.is_empty() {
        opts.palette_map = Some(&mut palette);
    }
    from_lines(&mut opts, lines.iter().map(String::as_str), &mut w).map_err(SvgError::Write)?;
    w.flush().map_err(SvgError::Write)
}

/// A green for an interpreted frame, its shade varied by name (like inferno's palettes) so
/// neighbouring frames stay apart.
fn interpreted_color(name: &str) -> Color {
    let shade = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 50;
    let shade = u8::try_from(shade).unwrap_or(0);
    Color {
        r: 50 + shade,
        g: 190 + shade,
        b: 60 + shade / 2,
    }
}

/// True for a folded line whose trailing count is a positive number (what inferno draws).
fn has_positive_count(line: &str) -> bool {
    line.trim()
        .rsplit_once(' ')
        .and_then(|(_, n)| n.parse::<f64>().ok())
        .is_some_and(|n| n > 0.0)
}

/// A minimal, valid SVG that states there was nothing to draw.
fn write_empty_svg(title: &str, subtitle: Option<&str>, w: &mut impl Write) -> io::Result<()> {
    let subtitle = subtitle.map_or(String::new(), |s| {
        format!(
            "<text x=\"600\" y=\"48\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n",
            xml_escape(s)
        )
    });
    write!(
        w,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"120\" viewBox=\"0 0 1200 120\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"600\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">{}</text>\n\
         {subtitle}\
         <text x=\"600\" y=\"80\" text-anchor=\"middle\" font-size=\"14\">no off-CPU samples</text>\n\
         </svg>\n",
        xml_escape(title)
    )?;
    w.flush()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal well-formedness check: XML prolog or svg root, closed svg, balanced tags.
    fn assert_svg(svg: &str, title: &str) {
        let t = svg.trim();
        assert!(t.starts_with("<?xml") || t.starts_with("<svg"), "{t:.80}");
        assert!(
            t.ends_with("</svg>"),
            "...{}",
            &t[t.len().saturating_sub(80)..]
        );
        assert!(svg.contains(title), "title missing");
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
    }

    /// Check that folded lines become a well-formed SVG with the title and "us" counts.
    #[test]
    fn svg_is_well_formed_with_title() {
        let lines = vec![
            "worker;main;-;schedule 1500".to_owned(),
            "worker;main;-;schedule;[runnable] 20".to_owned(),
        ];
        let mut out = Vec::new();
        let none = BTreeSet::new();
        write_svg(
            &lines,
            "Off-CPU time",
            Some("stallwatch -p 1"),
            &none,
            &mut out,
        )
        .unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert_svg(&svg, "Off-CPU time");
        assert!(svg.contains("stallwatch -p 1"));
        assert!(svg.contains("all (1,520 us, 100%)"), "count name missing");
    }

    /// Check that interpreted frames get their green, and other frames inferno's blues.
    #[test]
    fn interpreted_frames_are_green() {
        let lines = vec!["python3;sleep_site (app.py:3);-;schedule 1500".to_owned()];
        let interpreted = BTreeSet::from(["sleep_site (app.py:3)".to_owned()]);
        let mut out = Vec::new();
        write_svg(&lines, "t", None, &interpreted, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        let c = interpreted_color("sleep_site (app.py:3)");
        let fill = format!("fill=\"rgb({},{},{})\"", c.r, c.g, c.b);
        assert!(svg.contains(&fill), "no {fill} in the SVG");
        assert_eq!(
            svg.matches(&fill).count(),
            1,
            "only the Python frame is green"
        );
    }

    /// Check that no samples (or only zero counts) still give a valid SVG saying so.
    #[test]
    fn empty_input_gives_valid_svg() {
        for lines in [vec![], vec!["worker;main 0".to_owned()]] {
            let mut out = Vec::new();
            let none = BTreeSet::new();
            write_svg(&lines, "Off-CPU <empty> & \"quiet\"", None, &none, &mut out).unwrap();
            let svg = String::from_utf8(out).unwrap();
            assert_svg(&svg, "Off-CPU &lt;empty&gt; &amp; &quot;quiet&quot;");
            assert!(svg.contains("no off-CPU samples"));
        }
    }
}
