//! Writing captures for other tools: folded stacks and flame graph SVGs.
//!
//! Export works on `model::ResolvedSample`s: a sample with its stacks already turned into
//! frames. `stacks::Stacks::resolve_capture` does that once per capture (or a recording
//! brings them), so every format (and every option combination of one format) reuses the same
//! symbolization, and the formatters stay pure functions that tests drive with hand-made
//! frames. How each frame is named in a format is the exporter's business
//! ([`folded::frame_name`]).

use std::path::Path;

pub(crate) mod folded;
pub(crate) mod svg;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Folded stacks (`frame;frame;frame value` lines), as `flamegraph.pl` reads them.
    Folded,
    /// An interactive flame graph SVG.
    Svg,
}

impl Format {
    /// The format a file name asks for: `.folded`, `.collapsed`, `.txt`, `.stacks` -> folded,
    /// `.svg` -> SVG (case-insensitive); `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "folded" | "collapsed" | "txt" | "stacks" => Some(Format::Folded),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }

    /// The format named on the command line: `folded` (or `collapsed`), `svg` (or
    /// `flamegraph`), case-insensitive.
    pub fn from_name(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "folded" | "collapsed" => Some(Format::Folded),
            "svg" | "flamegraph" => Some(Format::Svg),
            _ => None,
        }
    }

    /// The canonical name, as accepted by [`Format::from_name`].
    pub fn name(&self) -> &'static str {
        match self {
            Format::Folded => "folded",
            Format::Svg => "svg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that file extensions map to formats, case-insensitively, and others to none.
    #[test]
    fn format_from_path_knows_the_extensions() {
        for (name, want) in [
            ("out.folded", Some(Format::Folded)),
            ("out.collapsed", Some(Format::Folded)),
            ("out.txt", Some(Format::Folded)),
            ("dir/out.stacks", Some(Format::Folded)),
            ("OUT.SVG", Some(Format::Svg)),
            ("out.json", None),
            ("out", None),
        ] {
            assert_eq!(Format::from_path(Path::new(name)), want, "{name}");
        }
    }

    /// Check that format names round-trip through `name` and `from_name`.
    #[test]
    fn format_names_round_trip() {
        for f in [Format::Folded, Format::Svg] {
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
        assert_eq!(Format::from_name("flamegraph"), Some(Format::Svg));
        assert_eq!(Format::from_name("pprof"), None);
    }
}
