//! `cargo xtask demo`: the main job on a freshly generated fixture.

use std::path::PathBuf;
use std::process::Command;

use tinyai_format::fixtures;

use crate::TaskError;
use crate::args::{Arguments, format_size, parse_size, workspace_root};

/// Usage of this command.
pub const USAGE: &str = "\
usage: cargo xtask demo [--size SIZE] [--budget-mib N] [--passes N] [--compute-us N]
                        [--owned] [--policy lru|classic|adaptive] [--no-prefetch]

Generates (once) a deterministic fixture model of SIZE (default 256MiB) under
target/fixtures/, larger than the memory budget (default 64 MiB), and streams it
through tinyai-store: forward passes with prefetch, a progress line per pass,
then a summary (passes per second, bytes read from storage, hit ratio, peak
charged and resident memory vs the budget). Runs the store's `stream` example
in release mode.
";

/// Runs the command.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let arguments = Arguments::parse(
        args,
        &["size", "budget-mib", "passes", "compute-us", "policy"],
        &["owned", "no-prefetch"],
    )?;
    let size = parse_size(arguments.value("size").unwrap_or("256MiB"))?;
    let root = workspace_root();
    let directory = root.join("target").join("fixtures");
    std::fs::create_dir_all(&directory)
        .map_err(|e| TaskError::Failed(format!("creating {}: {e}", directory.display())))?;
    let path: PathBuf = directory.join(format!("demo-{}.tmai", format_size(size)));
    if !path.exists() {
        println!("writing fixture {} ...", path.display());
        fixtures::write_fixture_file(&fixtures::large(size), &path)?;
    }
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "tinyai-store",
            "--example",
            "stream",
            "--",
        ])
        .arg(&path)
        .args([
            "--budget-mib",
            arguments.value("budget-mib").unwrap_or("64"),
        ])
        .args(["--passes", arguments.value("passes").unwrap_or("4")])
        .args([
            "--compute-us",
            arguments.value("compute-us").unwrap_or("200"),
        ]);
    if let Some(policy) = arguments.value("policy") {
        command.args(["--policy", policy]);
    }
    for flag in ["owned", "no-prefetch"] {
        if arguments.flag(flag) {
            command.arg(format!("--{flag}"));
        }
    }
    let status = command
        .status()
        .map_err(|e| TaskError::Failed(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(TaskError::Failed(format!(
            "the stream example failed ({status})"
        )));
    }
    Ok(())
}
