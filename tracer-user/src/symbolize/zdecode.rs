//! GHC's z-encoding, undone: `base_GHCziMVar_takeMVar1_info` -> `base:GHC.MVar.takeMVar1`.
//!
//! GHC names the code and data of Haskell definitions with linker symbols built from the
//! unit (package), the module and the definition's name, each z-encoded so that any Haskell
//! name becomes a C identifier, joined by `_` and followed by what the label is (`info`,
//! `closure`, `con_info`...). A raw `_` never occurs inside an encoded part (it is `zu`), so
//! splitting at `_` is exact. The encoding (GHC's `GHC.Utils.Encoding`, written here from its
//! documented rules):
//!
//! - letters and digits stand for themselves, except `z` and `Z`, which start an escape;
//! - `ZL ZR ZM ZN ZC ZZ` are `( ) [ ] : Z`;
//! - `zz za zb zc zd ze zg zh zi zl zm zn zp zq zr zs zt zu zv` are
//!   `z & | ^ $ = > # . < - ! + ' \ / * _ %`;
//! - `Z<n>T` is the n-tuple constructor (`Z0T` = `()`, `Z3T` = `(,,)`), `Z<n>H` the unboxed one
//!   (`Z1H` = `(# #)`, `Z3H` = `(#,,#)`);
//! - `z<hex>U` is any other character by its code point in hex (with a leading `0` when the
//!   first hex digit is a letter, so it cannot be read as one of the escapes above).
//!
//! Decoding is strict: an escape GHC never writes makes the whole name "not z-encoded", so
//! that C names are left alone (see [`decode_symbol`] for which names are decoded at all).

use std::{fmt, fs::File, path::Path};

use object::{Object, ObjectSymbol, ReadCache};

/// Label kinds GHC appends to the name of a Haskell definition (`GHC.Cmm.CLabel`), longest
/// first so that `con_info` is taken before `info`.
const SUFFIXES: &[&[&str]] = &[
    &["static", "info"],
    &["static", "entry"],
    &["con", "info"],
    &["con", "entry"],
    &["closure", "tbl"],
    &["info"],
    &["entry"],
    &["closure"],
    &["slow"],
    &["fast"],
    &["ret"],
    &["srt"],
    &["bytes"],
];

/// Undoes the z-encoding of one name part; `None` if it is not a valid z-encoding (a
/// character outside `[A-Za-z0-9]`, an unknown or unfinished escape).
pub(crate) fn zdecode(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let bytes = encoded.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        if c != b'z' && c != b'Z' {
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let d = *bytes.get(i + 1)?;
        if d.is_ascii_digit() {
            let digits_end = bytes[i + 1..]
                .iter()
                .position(|b| !b.is_ascii_hexdigit())
                .map_or(bytes.len(), |p| i + 1 + p);
            let (text, end) = if c == b'Z' {
                tuple(encoded, i + 1)?
            } else {
                let hex = &encoded[i + 1..digits_end];
                if bytes.get(digits_end) != Some(&b'U') {
                    return None;
                }
                let code = u32::from_str_radix(hex, 16).ok()?;
                (char::from_u32(code)?.to_string(), digits_end + 1)
            };
            out.push_str(&text);
            i = end;
            continue;
        }
        let decoded = if c == b'Z' { upper(d) } else { lower(d) }?;
        out.push(decoded);
        i += 2;
    }
    Some(out)
}

/// `Z<n>T` / `Z<n>H` starting at the digits at `start`: the tuple's text and where the
/// escape ends.
fn tuple(encoded: &str, start: usize) -> Option<(String, usize)> {
    let bytes = encoded.as_bytes();
    let end = bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |p| start + p);
    let arity: usize = encoded[start..end].parse().ok()?;
    let commas = ",".repeat(arity.saturating_sub(1));
    let text = match bytes.get(end)? {
        b'T' => format!("({commas})"),
        b'H' if arity == 1 => "(# #)".to_owned(),
        b'H' => format!("(#{commas}#)"),
        _ => return None,
    };
    Some((text, end + 1))
}

fn upper(c: u8) -> Option<char> {
    Some(match c {
        b'L' => '(',
        b'R' => ')',
        b'M' => '[',
        b'N' => ']',
        b'C' => ':',
        b'Z' => 'Z',
        _ => return None,
    })
}

fn lower(c: u8) -> Option<char> {
    Some(match c {
        b'z' => 'z',
        b'a' => '&',
        b'b' => '|',
        b'c' => '^',
        b'd' => '$',
        b'e' => '=',
        b'g' => '>',
        b'h' => '#',
        b'i' => '.',
        b'l' => '<',
        b'm' => '-',
        b'n' => '!',
        b'p' => '+',
        b'q' => '\'',
        b'r' => '\\',
        b's' => '/',
        b't' => '*',
        b'u' => '_',
        b'v' => '%',
        _ => return None,
    })
}

/// A Haskell definition's linker symbol, split and decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StgSymbol {
    /// The package's name without its version and hash (`base`, `ghc-prim`, `containers`);
    /// `None` for the program's own modules (the `main` unit, which GHC leaves out).
    pub package: Option<String>,
    /// The module (`GHC.MVar`, `Main`).
    pub module: String,
    /// The definition (`takeMVar1`, `$wloop`, `:|`).
    pub name: String,
    /// The kind of label (`info`, `closure`, `con_info`).
    pub suffix: &'static str,
}

impl fmt::Display for StgSymbol {
    /// `base:GHC.MVar.takeMVar1`, `Main.main`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(package) = &self.package {
            write!(f, "{package}:")?;
        }
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// Splits and decodes `<package>_<Module>_<name>_<suffix>` (or `<Module>_<name>_<suffix>` for
/// the main unit); `None` unless every part is a valid z-encoding, the suffix is a label kind
/// GHC writes, the module is dotted capitalised identifiers and the package a package name.
/// That shape is what keeps C names (`pthread_cond_wait`, `stg_ap_p_info`, `foo_info`) out.
pub(crate) fn parse_stg_symbol(symbol: &str) -> Option<StgSymbol> {
    let parts: Vec<&str> = symbol.split('_').collect();
    let (suffix, rest) = SUFFIXES.iter().find_map(|suffix| {
        let head = parts.len().checked_sub(suffix.len())?;
        (parts[head..] == **suffix).then(|| (*suffix, &parts[..head]))
    })?;
    let suffix = match suffix {
        [one] => *one,
        [a, b] => SUFFIX_NAMES.iter().find(|s| **s == format!("{a}_{b}"))?,
        _ => return None,
    };
    let (package, module, name) = match rest {
        [module, name] => (None, *module, *name),
        [package, module, name] => (Some(*package), *module, *name),
        _ => return None,
    };
    let module = zdecode(module)?;
    let name = zdecode(name)?;
    if !is_module_name(&module) || name.is_empty() {
        return None;
    }
    let package = match package {
        Some(p) => Some(package_name(&zdecode(p)?)?),
        None => None,
    };
    Some(StgSymbol {
        package,
        module,
        name,
        suffix,
    })
}

/// The two-word suffixes as one name each.
const SUFFIX_NAMES: &[&str] = &[
    "static_info",
    "static_entry",
    "con_info",
    "con_entry",
    "closure_tbl",
];

/// The decoded name of a Haskell definition's symbol (`base:GHC.MVar.takeMVar1`), `None` if
/// `symbol` does not have the shape of one ([`parse_stg_symbol`]).
pub(crate) fn decode_symbol(symbol: &str) -> Option<String> {
    parse_stg_symbol(symbol).map(|s| s.to_string())
}

/// `GHC.MVar`, `Main`, `:Main` (GHC's wrapper around `main`): dotted identifiers, each
/// starting with a capital letter.
fn is_module_name(module: &str) -> bool {
    let module = module.strip_prefix(':').unwrap_or(module);
    !module.is_empty()
        && module.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_uppercase())
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '\'')
        })
}

/// The package's name from a unit id: `base` -> `base`, `containers-0.6.5.1` ->
/// `containers`, `aeson-2.0.3.0-Hx9Zk` -> `aeson` (the version starts at the first `-` followed
/// by a digit; names like `ghc-prim` keep their dashes). `None` if it is not a package name
/// (it must start with a letter and hold only letters, digits, `-` and `.`).
fn package_name(unit: &str) -> Option<String> {
    let valid = unit.starts_with(|c: char| c.is_ascii_alphabetic())
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return None;
    }
    let bytes = unit.as_bytes();
    let cut = (0..bytes.len())
        .find(|&i| bytes[i] == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        .unwrap_or(bytes.len());
    Some(unit[..cut].to_owned())
}

/// The section GHC writes into every program it links (the flags it linked with, to decide
/// when to relink): its presence says the file is a GHC program.
const GHC_LINK_INFO_SECTION: &str = ".debug-ghc-link-info";

/// Whether the ELF file at `path` (named `file_name` in the process's mappings) is GHC's:
/// a Haskell library (`libHSbase-4.15.1.0-ghc9.0.2.so`), a program GHC linked (it has
/// [`GHC_LINK_INFO_SECTION`]) or anything with the RTS linked in (it defines `hs_main`). Only
/// the section and symbol tables are read, through a read cache.
pub(crate) fn is_ghc_binary(path: &Path, file_name: &str) -> bool {
    if file_name.starts_with("libHS") {
        return true;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return false;
    };
    elf.section_by_name(GHC_LINK_INFO_SECTION).is_some()
        || elf
            .symbols()
            .any(|s| s.is_definition() && s.name() == Ok("hs_main"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that every escape GHC writes decodes to its character.
    #[test]
    fn escapes_decode() {
        for (encoded, decoded) in [
            ("zz", "z"),
            ("ZZ", "Z"),
            ("zi", "."),
            ("zu", "_"),
            ("zd", "$"),
            ("zm", "-"),
            ("zp", "+"),
            ("zh", "#"),
            ("zl", "<"),
            ("zg", ">"),
            ("zr", "\\"),
            ("zs", "/"),
            ("zt", "*"),
            ("za", "&"),
            ("zb", "|"),
            ("zc", "^"),
            ("ze", "="),
            ("zn", "!"),
            ("zq", "'"),
            ("zv", "%"),
            ("ZL", "("),
            ("ZR", ")"),
            ("ZM", "["),
            ("ZN", "]"),
            ("ZC", ":"),
            ("Z0T", "()"),
            ("Z2T", "(,)"),
            ("Z5T", "(,,,,)"),
            ("Z1H", "(# #)"),
            ("Z3H", "(#,,#)"),
            ("z3bbU", "\u{3bb}"),
            ("z0e9U", "é"),
            ("foozhzh1", "foo##1"),
            ("ZCzp", ":+"),
            ("zdwgo", "$wgo"),
            ("Z12T", "(,,,,,,,,,,,)"),
        ] {
            assert_eq!(zdecode(encoded).as_deref(), Some(decoded), "{encoded}");
        }
    }

    /// Check that what GHC never writes is refused rather than guessed at.
    #[test]
    fn invalid_encodings_are_refused() {
        for bad in [
            "zx",
            "Zq",
            "z",
            "Z",
            "z12",
            "Z3",
            "Z3X",
            "a.b",
            "a-b",
            "zfffffffU",
        ] {
            assert_eq!(zdecode(bad), None, "{bad}");
        }
    }

    /// Check real symbols of a GHC 9.0.2 `-threaded` program (from `nm`) and of libraries
    /// with versioned unit ids.
    #[test]
    fn real_symbols_decode() {
        for (symbol, decoded) in [
            ("base_GHCziMVar_takeMVar1_info", "base:GHC.MVar.takeMVar1"),
            (
                "base_GHCziEventziEPoll_new10_info",
                "base:GHC.Event.EPoll.new10",
            ),
            (
                "base_GHCziConcziIO_ensureIOManagerIsRunning_closure",
                "base:GHC.Conc.IO.ensureIOManagerIsRunning",
            ),
            ("ghczmprim_GHCziTuple_Z0T_closure", "ghc-prim:GHC.Tuple.()"),
            ("ghczmprim_GHCziTypes_Izh_con_info", "ghc-prim:GHC.Types.I#"),
            ("ghczmprim_GHCziTypes_ZC_con_info", "ghc-prim:GHC.Types.:"),
            (
                "base_GHCziExceptionziType_divZZeroException_closure",
                "base:GHC.Exception.Type.divZeroException",
            ),
            (
                "base_GHCziWeak_runFinalizzerBatch_closure",
                "base:GHC.Weak.runFinalizerBatch",
            ),
            ("base_GHCziBase_zpzp_info", "base:GHC.Base.++"),
            (
                "base_GHCziBase_zdfMonadIO_closure",
                "base:GHC.Base.$fMonadIO",
            ),
            (
                "base_GHCziShow_zdwshowSignedInt_info",
                "base:GHC.Show.$wshowSignedInt",
            ),
            ("Main_main_info", "Main.main"),
            ("Main_zdwlocker_info", "Main.$wlocker"),
            ("ZCMain_main_closure", ":Main.main"),
            (
                "containerszm0zi6zi5zi1_DataziMapziInternal_insert_info",
                "containers:Data.Map.Internal.insert",
            ),
            (
                "aesonzm2zi0zi3zi0zmHx9ZZk2Lm_DataziAesonziTypesziInternal_Object_con_info",
                "aeson:Data.Aeson.Types.Internal.Object",
            ),
            (
                "ghczmbignum_GHCziNumziInteger_integerAdd_info",
                "ghc-bignum:GHC.Num.Integer.integerAdd",
            ),
            ("base_GHCziBase_Z2T_closure_tbl", "base:GHC.Base.(,)"),
            ("Main_z3bbU_info", "Main.\u{3bb}"),
        ] {
            assert_eq!(decode_symbol(symbol).as_deref(), Some(decoded), "{symbol}");
        }
        let parsed = parse_stg_symbol("ghczmprim_GHCziTypes_Izh_con_info").expect("a symbol");
        assert_eq!(parsed.suffix, "con_info");
        assert_eq!(parsed.package.as_deref(), Some("ghc-prim"));
    }

    /// Check that C names, the RTS's own symbols and malformed labels are left alone.
    #[test]
    fn c_names_are_not_decoded() {
        for name in [
            "pthread_cond_wait",
            "__pthread_cond_wait",
            "waitCondition",
            "yieldCapability",
            "stg_ap_p_info",
            "stg_takeMVarzh",
            "foo_info",
            "my_lib_zip_entry",
            "base_GHCziMVar_takeMVar1",
            "base_ghcziMVar_takeMVar1_info",
            "base_GHCzxMVar_takeMVar1_info",
            "_GHCziMVar_x_info",
            "a_b_c_d_info",
            "Main__info",
            "std::thread::park",
        ] {
            assert_eq!(decode_symbol(name), None, "{name}");
        }
    }
}
