//! `cargo xtask concurrency`: the store's concurrency checks beyond the stress
//! tests — loom model tests of the slot state machine, and the store's
//! multi-threaded tests under ThreadSanitizer.
//!
//! - **loom** (`RUSTFLAGS="--cfg loom"`, its own target directory so the main
//!   build is not invalidated): every interleaving of the pin / unpin / claim /
//!   reclaim / reload protocol in `tinyai-store/src/slot.rs`. Needs nothing
//!   beyond the stable toolchain; a failure fails the task.
//! - **tsan** (nightly, `-Zsanitizer=thread -Zbuild-std`, so the standard
//!   library is instrumented too): the stress and pinned-marker tests. Needs
//!   the nightly toolchain with `rust-src`; the task adds the component, and
//!   prints `SKIP: tsan: <reason>` when it cannot be had. A race report fails
//!   the task.
//! - **miri** (nightly with the `miri` component, added if missing; SKIP
//!   otherwise): the store's unit tests — the slot state machine's
//!   transitions, the read buffers, and the self-borrowing tables, whose
//!   earlier `Box`-based version Miri reports as undefined behaviour under
//!   Stacked Borrows.

use std::process::Command;

use crate::TaskError;

pub const USAGE: &str = "\
usage: cargo xtask concurrency [loom|tsan|miri|all]

Runs the loom model tests of the store's slot state machine (stable
toolchain), the store's multi-threaded tests under ThreadSanitizer (nightly
with rust-src) and its unit tests under Miri (nightly with miri); the nightly
components are added if missing, and a check that cannot run says SKIP with
the reason. Default: all.
";

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(command: &mut Command, what: &str) -> Result<(), TaskError> {
    println!("== {what}");
    let status = command
        .status()
        .map_err(|error| TaskError::Failed(format!("{what}: cannot start: {error}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(TaskError::Failed(format!("{what}: {status}")))
    }
}

fn loom() -> Result<(), TaskError> {
    let mut command = cargo();
    command
        .args(["test", "-p", "tinyai-store", "--lib", "--release", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", "target/loom");
    run(&mut command, "loom model tests of the slot state machine")
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether the nightly toolchain with `components` can be had; prints
/// `SKIP: <check>: <reason>` when not.
fn nightly_with(check: &str, components: &[&str]) -> bool {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        tinyai_format::fixtures::skip(
            check,
            "the nightly toolchain is not installed (rustup toolchain install nightly)",
        );
        return false;
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add"])
        .args(components)
        .args(["--toolchain", "nightly"]);
    if !succeeds(&mut add) {
        tinyai_format::fixtures::skip(
            check,
            &format!(
                "cannot add {} to the nightly toolchain",
                components.join(" and ")
            ),
        );
        return false;
    }
    true
}

/// `cargo` of the nightly toolchain (through rustup).
fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", "nightly", "cargo"]);
    command
}

fn tsan() -> Result<(), TaskError> {
    // rust-src: -Zbuild-std instruments the standard library too.
    if !nightly_with("tsan", &["rust-src"]) {
        return Ok(());
    }
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut command = nightly_cargo();
    command
        .args([
            "test",
            "-Zbuild-std",
            "--target",
            &target,
            "-p",
            "tinyai-store",
            "--test",
            "stress",
            "--test",
            "pinned_marker_stress",
            "--test",
            "core_defects",
        ])
        .env("RUSTFLAGS", "-Zsanitizer=thread")
        .env("RUSTDOCFLAGS", "-Zsanitizer=thread")
        .env("CARGO_TARGET_DIR", "target/tsan")
        // Instrumented code is ~10x slower: fewer operations, same mix.
        .env("TINYAI_STRESS_OPS", "100000")
        .env("TSAN_OPTIONS", "halt_on_error=1 second_deadlock_stack=1");
    run(&mut command, "store stress tests under ThreadSanitizer")
}

fn miri() -> Result<(), TaskError> {
    if !nightly_with("miri", &["miri", "rust-src"]) {
        return Ok(());
    }
    let mut command = nightly_cargo();
    command
        .args(["miri", "test", "-p", "tinyai-store", "--lib"])
        // The tables test reads a fixture file.
        .env("MIRIFLAGS", "-Zmiri-disable-isolation");
    run(&mut command, "store unit tests under Miri")
}

pub fn run_task(args: &[String]) -> Result<(), TaskError> {
    match args.first().map(String::as_str) {
        None | Some("all") => {
            loom()?;
            tsan()?;
            miri()
        }
        Some("loom") => loom(),
        Some("tsan") => tsan(),
        Some("miri") => miri(),
        Some("--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(TaskError::Usage(format!("unknown check {other:?}"))),
    }
}
