//! The command line: clap definitions and dispatch.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use regex::Regex;
use tinyai_format::limits;

use crate::convert::{self, ConvertOptions, Grouping};
use crate::error::{CliError, Result};

/// Inspect, verify and convert TinyAI `.tmai` model files (inspect and verify also open safetensors and GGUF files as they are).
#[derive(Debug, Parser)]
#[command(name = "tmai", version, about, long_about = None)]
pub struct Cli {
    /// No progress output on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a model's header, metadata, layer table and tensors (reads only headers and tables).
    Inspect {
        /// A .tmai file (current or legacy v1), safetensors file, sharded set's
        /// model.safetensors.index.json or GGUF file: detected by content, not by extension.
        file: PathBuf,
        /// Print one JSON document (schema: see the crate README).
        #[arg(long)]
        json: bool,
    },
    /// Validate a model's structure and every layer checksum (safetensors/GGUF: every layer byte is read; they carry no checksums).
    Verify {
        /// A .tmai file (current or legacy v1), safetensors file, sharded set's
        /// model.safetensors.index.json or GGUF file: detected by content, not by extension.
        file: PathBuf,
    },
    /// Convert safetensors (file, sharded index or directory), GGUF v2/v3 or legacy v1 to .tmai.
    Convert {
        /// Input: detected by content, not by extension.
        input: PathBuf,
        /// Output .tmai file (replaced atomically).
        output: PathBuf,
        /// Layer alignment in bytes: a power of two from 64 to 1 GiB.
        #[arg(long, default_value_t = limits::DEFAULT_ALIGNMENT, value_parser = parse_alignment)]
        alignment: u64,
        /// Group tensors into layers by this regex's first capture group instead of the built-in rule.
        #[arg(long, value_name = "REGEX")]
        group_by: Option<String>,
    },
}

fn parse_alignment(text: &str) -> std::result::Result<u64, String> {
    let value: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !value.is_power_of_two() || !(limits::MIN_ALIGNMENT..=limits::MAX_ALIGNMENT).contains(&value)
    {
        return Err(format!(
            "{value} is not a power of two between {} and {}",
            limits::MIN_ALIGNMENT,
            limits::MAX_ALIGNMENT
        ));
    }
    Ok(value)
}

fn parse_group_by(pattern: &str) -> Result<Regex> {
    let regex = Regex::new(pattern).map_err(|error| {
        CliError::Usage(format!(
            "--group-by: invalid regex: {}",
            one_line(&error.to_string())
        ))
    })?;
    if regex.captures_len() < 2 {
        return Err(CliError::Usage(format!(
            "--group-by: regex {pattern:?} has no capture group (the first one names the layer)"
        )));
    }
    Ok(regex)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs a parsed command line, writing results to `out`.
pub fn execute(cli: Cli, out: &mut dyn Write) -> Result<()> {
    match cli.command {
        Command::Inspect { file, json } => match crate::remote::url(&file) {
            Some(url) => crate::remote::inspect(url, json, out),
            None => crate::inspect::run(&file, json, out),
        },
        Command::Verify { file } => match crate::remote::url(&file) {
            Some(url) => crate::remote::verify(url, cli.quiet, out),
            None => crate::verify::run(&file, cli.quiet, out),
        },
        Command::Convert {
            input,
            output,
            alignment,
            group_by,
        } => {
            let grouping = match group_by {
                Some(pattern) => Grouping::Regex(parse_group_by(&pattern)?),
                None => Grouping::Default,
            };
            let options = ConvertOptions {
                alignment,
                grouping,
                quiet: cli.quiet,
            };
            convert::run(&input, &output, &options, out)
        }
    }
}

/// Parses `args` (program name first), runs the command and returns the exit code:
/// 0 on success, 1 on failure, 2 on a usage error. Errors are printed to stderr as
/// one line, `tmai: error: …`.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return code;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match execute(cli, &mut out) {
        Ok(()) => 0,
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(error) => {
            let _ = out.flush();
            eprintln!("tmai: error: {}", one_line(&error.to_string()));
            error.exit_code()
        }
    }
}
