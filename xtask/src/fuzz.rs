//! `cargo xtask fuzz`: runs a cargo-fuzz target (fuzz/) with nightly: `parse`
//! and `parse_resealed` (`.tmai`), `safetensors` and `gguf` (the foreign
//! header readers).
//!
//! Optional tooling: when nightly Rust or cargo-fuzz is missing it says so and
//! exits successfully, so nothing (CI included) depends on it.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::TaskError;
use crate::args::{Arguments, workspace_root};

/// Usage of this command.
pub const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [--target parse|parse_resealed|safetensors|gguf]

Runs `cargo +nightly fuzz run NAME -- -max_total_time=N` in fuzz/ (default
target `parse`, default 60 seconds). The `.tmai` targets' corpus is seeded
with the golden files of fixtures/; `parse_resealed` recomputes the CRCs of
each input first, to reach the validation behind them. `safetensors` (a file
header, a sharded index, content detection) and `gguf` (a v2/v3 header) are
seeded with a small valid file each. Needs the nightly toolchain and cargo-fuzz
(`rustup toolchain install nightly`, `cargo install cargo-fuzz`); without them
it prints what is missing and exits 0. Crashes are saved under
fuzz/artifacts/NAME/.
";

/// The targets of fuzz/Cargo.toml.
const TARGETS: [&str; 4] = ["parse", "parse_resealed", "safetensors", "gguf"];

/// Runs the command.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let arguments = Arguments::parse(args, &["seconds", "target"], &[])?;
    let seconds: u64 = arguments
        .value("seconds")
        .unwrap_or("60")
        .parse()
        .map_err(|_| TaskError::Usage("--seconds needs a whole number".to_owned()))?;
    let target = arguments.value("target").unwrap_or("parse");
    if !TARGETS.contains(&target) {
        return Err(TaskError::Usage(format!(
            "unknown fuzz target {target:?} (one of {})",
            TARGETS.join(", ")
        )));
    }
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");

    if !succeeds(nightly_cargo(&fuzz_dir).arg("--version")) {
        println!(
            "skipping fuzzing: the nightly toolchain is not installed (rustup toolchain install nightly)"
        );
        return Ok(());
    }
    if !succeeds(nightly_cargo(&fuzz_dir).args(["fuzz", "--version"])) {
        println!("skipping fuzzing: cargo-fuzz is not installed (cargo install cargo-fuzz)");
        return Ok(());
    }

    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| TaskError::Failed(format!("creating {}: {e}", corpus.display())))?;
    match target {
        "safetensors" => {
            let mut seed = 55u64.to_le_bytes().to_vec();
            seed.extend_from_slice(br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} "#);
            seed.extend_from_slice(&[0; 8]);
            let _ = std::fs::write(corpus.join("seed.safetensors"), seed);
            let index = br#"{"metadata":{"total_size":8},"weight_map":{"w":"model-00001-of-00001.safetensors"}}"#;
            let _ = std::fs::write(corpus.join("seed.index.json"), index);
        }
        "gguf" => {
            let mut seed = b"GGUF".to_vec();
            seed.extend_from_slice(&3u32.to_le_bytes());
            seed.extend_from_slice(&0u64.to_le_bytes());
            seed.extend_from_slice(&0u64.to_le_bytes());
            let _ = std::fs::write(corpus.join("seed.gguf"), seed);
        }
        _ => {}
    }
    if target.starts_with("parse")
        && let Ok(entries) = std::fs::read_dir(root.join("fixtures"))
    {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "tmai") {
                let _ = std::fs::copy(&path, corpus.join(entry.file_name()));
            }
        }
    }
    println!("fuzzing target {target:?} for {seconds} s (cargo +nightly fuzz run) ...");
    let status = nightly_cargo(&fuzz_dir)
        .args(["fuzz", "run", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .status()
        .map_err(|e| TaskError::Failed(format!("running cargo fuzz: {e}")))?;
    if !status.success() {
        return Err(TaskError::Failed(format!(
            "cargo fuzz run {target} failed ({status}); crash inputs are in fuzz/artifacts/{target}/"
        )));
    }
    println!("no crash in {seconds} s");
    Ok(())
}

/// `cargo +nightly` in `dir`, without the environment the outer (stable) cargo set.
fn nightly_cargo(dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly").current_dir(dir);
    for variable in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
    ] {
        command.env_remove(variable);
    }
    command
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
