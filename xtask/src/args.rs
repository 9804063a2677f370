//! Tiny helpers shared by the commands: argument parsing, sizes, paths.

use std::path::PathBuf;

use crate::TaskError;

/// A parsed command line: flags (`--name`) and options (`--name value` or `--name=value`).
#[derive(Debug, Default)]
pub struct Arguments {
    /// `(name, value)` in order; `value` is `None` for flags.
    pub options: Vec<(String, Option<String>)>,
}

impl Arguments {
    /// Parses `args` given the names of the options that take a value; any other
    /// `--name` is a flag. Positional arguments are rejected.
    pub fn parse(args: &[String], valued: &[&str], flags: &[&str]) -> Result<Self, TaskError> {
        let mut parsed = Arguments::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let Some(stripped) = arg.strip_prefix("--") else {
                return Err(TaskError::Usage(format!("unexpected argument {arg:?}")));
            };
            let (name, inline) = match stripped.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (stripped, None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(value) => value,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or_else(|| TaskError::Usage(format!("--{name} needs a value")))?,
                };
                parsed.options.push((name.to_owned(), Some(value)));
            } else if flags.contains(&name) && inline.is_none() {
                parsed.options.push((name.to_owned(), None));
            } else {
                return Err(TaskError::Usage(format!("unknown option {arg:?}")));
            }
        }
        Ok(parsed)
    }

    /// Whether flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// The last value of option `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Parses `1GiB`, `512MiB`, `64KiB`, `1G`, `10M` (binary), `1GB`, `10MB`, `4kB`
/// (decimal) or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, TaskError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| TaskError::Usage(format!("invalid size {text:?} (try 1GiB, 512MiB, 4096)")))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(TaskError::Usage(format!(
                "invalid size unit in {text:?} (try 1GiB, 512MiB, 4096)"
            )));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| TaskError::Usage(format!("size {text:?} is too large")))
}

/// `1GiB`, `3MiB`, `12345B`: the shortest exact binary rendering of `bytes`.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("GiB").is_err());
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(3 << 20), "3MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn arguments() {
        let args: Vec<String> = ["--size", "1GiB", "--out=x", "--update-golden"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parsed = Arguments::parse(&args, &["size", "out"], &["update-golden"]).unwrap();
        assert_eq!(parsed.value("size"), Some("1GiB"));
        assert_eq!(parsed.value("out"), Some("x"));
        assert!(parsed.flag("update-golden"));
        assert!(Arguments::parse(&["--bogus".to_owned()], &[], &[]).is_err());
        assert!(Arguments::parse(&["--size".to_owned()], &["size"], &[]).is_err());
    }
}
