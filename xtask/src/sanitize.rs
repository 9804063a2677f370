//! `cargo xtask sanitize` (alias `concurrency`): the checks beyond the plain
//! test run — loom model tests of the slot state machine, ThreadSanitizer
//! over the store's threaded tests and the C programs, and Miri over the pure
//! crates and the store's unit tests.
//!
//! - **loom** (`RUSTFLAGS="--cfg loom"`, its own target directory so the main
//!   build is not invalidated): every interleaving of the pin / unpin / claim /
//!   reclaim / reload protocol in `tinyai-store/src/slot.rs`. Needs nothing
//!   beyond the stable toolchain; a failure fails the task.
//! - **tsan** (nightly, `-Zsanitizer=thread -Zbuild-std`, so the standard
//!   library is instrumented too; target directory `target/tsan`): the store's
//!   `stress`, `pinned_marker_stress` and `core_defects` tests, then the
//!   `c_programs` test of `tinyai-ffi` with `TINYAI_C_SANITIZE=thread`, which
//!   compiles every C program with `-fsanitize=thread` against the
//!   instrumented `libtinyai.a` (its ASan and pkg-config tests are left out:
//!   they need a library built without TSan). `TSAN_OPTIONS` makes the first
//!   report end the process with exit code 66, so a race fails the task.
//! - **miri** (nightly with the `miri` component): the unit tests of
//!   `tinyai-format` with isolation on (it has no `unsafe` of its own: this
//!   checks its dependencies' unsafe code on the unit tests' paths; tests
//!   that need files or processes are `#[cfg_attr(miri, ignore)]`), then the
//!   store's unit
//!   tests — the slot state machine's transitions, the read buffers, and the
//!   self-borrowing tables, whose earlier `Box`-based version Miri reports as
//!   undefined behaviour under Stacked Borrows.
//!
//! A nightly step that cannot run (no nightly toolchain, a component that
//! cannot be added) prints `SKIP: sanitize <step>: <reason>` and records it
//! in `$TINYAI_SKIP_LOG` (`tinyai_format::fixtures::skip`), so `.ci/run`
//! fails unless `.ci/skip-allowlist` allows it. Each step prints its wall time.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::TaskError;
use crate::args::workspace_root;

pub const USAGE: &str = "\
usage: cargo xtask sanitize [loom|tsan|miri|all]
       (`cargo xtask concurrency` is the same command)

  loom   loom model tests of the store's slot state machine (stable toolchain)
  tsan   ThreadSanitizer (nightly, -Zbuild-std; rust-src is added if missing):
         the store's stress, pinned-marker and core-defect tests, and the C
         test programs compiled with -fsanitize=thread against the
         instrumented libtinyai.a
  miri   Miri (nightly; the miri component is added if missing): the unit tests
         of tinyai-format and of the store (tinyai-cache has no unsafe code)
  all    all three, in this order (the default)

A step that cannot run says `SKIP: sanitize <step>: <reason>`; a race, an
undefined-behaviour report or a failing test fails the task. Each step prints
its wall time.
";

/// `TSAN_OPTIONS` for every process of the TSan step: the first report ends
/// the process with exit code 66 (a test binary fails, and a C program's exit
/// status fails its test).
const TSAN_OPTIONS: &str = "halt_on_error=1 exitcode=66 second_deadlock_stack=1";

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo` of the nightly toolchain (through rustup).
fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", "nightly", "cargo"]);
    command
}

/// `<target>/<name>`: a directory of its own per instrumentation, so that no
/// step invalidates the main build; `<target>` is `$CARGO_TARGET_DIR` or the
/// workspace's `target/`.
fn target_dir(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join(name)
}

/// Runs `command` from the workspace root; its failure fails the task.
fn run(command: &mut Command, what: &str) -> Result<(), TaskError> {
    println!("== sanitize: {what}");
    let started = Instant::now();
    let status = command
        .current_dir(workspace_root())
        .status()
        .map_err(|error| TaskError::Failed(format!("{what}: cannot start: {error}")))?;
    let seconds = started.elapsed().as_secs_f64();
    if status.success() {
        println!("== sanitize: {what}: ok in {seconds:.1} s");
        Ok(())
    } else {
        Err(TaskError::Failed(format!(
            "{what}: {status} after {seconds:.1} s"
        )))
    }
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether the nightly toolchain with `components` can be had; prints
/// `SKIP: sanitize <step>: <reason>` when not.
fn nightly_with(step: &str, components: &[&str]) -> bool {
    let name = format!("sanitize {step}");
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        tinyai_format::fixtures::skip(
            &name,
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
            &name,
            &format!(
                "cannot add {} to the nightly toolchain",
                components.join(" and ")
            ),
        );
        return false;
    }
    true
}

fn loom() -> Result<(), TaskError> {
    let mut command = cargo();
    command
        .args(["test", "-p", "tinyai-store", "--lib", "--release", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", target_dir("loom"));
    run(&mut command, "loom model tests of the slot state machine")
}

/// `cargo +nightly test` with ThreadSanitizer: `-Zbuild-std` for the host
/// target, so the standard library is instrumented too.
fn tsan_cargo_test() -> Command {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut command = nightly_cargo();
    command
        .args(["test", "-Zbuild-std", "--target", &target])
        .env("RUSTFLAGS", "-Zsanitizer=thread")
        .env("RUSTDOCFLAGS", "-Zsanitizer=thread")
        .env("CARGO_TARGET_DIR", target_dir("tsan"))
        .env("TSAN_OPTIONS", TSAN_OPTIONS);
    command
}

fn tsan() -> Result<(), TaskError> {
    // rust-src: -Zbuild-std instruments the standard library too.
    if !nightly_with("tsan", &["rust-src"]) {
        return Ok(());
    }
    let mut store = tsan_cargo_test();
    store
        .args([
            "-p",
            "tinyai-store",
            "--test",
            "stress",
            "--test",
            "pinned_marker_stress",
            "--test",
            "core_defects",
            // Multi-request loads: the I/O workers writing disjoint pieces
            // of one buffer, and populating one mapping, from 16 threads.
            "--test",
            "io_pipeline",
        ])
        // Instrumented code is ~10x slower: fewer operations, same mix.
        .env("TINYAI_STRESS_OPS", "100000");
    run(&mut store, "store stress tests under ThreadSanitizer")?;

    let mut c_programs = tsan_cargo_test();
    c_programs
        // Without the remote feature: no HTTP stack to instrument (its one
        // test is left out below anyway).
        .args([
            "-p",
            "tinyai-ffi",
            "--no-default-features",
            "--test",
            "c_programs",
            "--",
        ])
        // thread_sanitizer_reports_a_race_in_a_c_program: proves a race fails.
        .arg("--include-ignored")
        // Both need a libtinyai.a built without TSan: the plain test run has them.
        .args([
            "--skip",
            "programs_are_clean_under_address_and_undefined_sanitizers",
            "--skip",
            "pkg_config_file_builds_the_seed_example",
            // A memory-limit test: ThreadSanitizer's shadow memory would count
            // against the cgroup's limit; the plain test run has it.
            "--skip",
            "streaming_in_a_memory_cgroup_keeps_usage_within_the_budget",
        ])
        .env("TINYAI_C_SANITIZE", "thread")
        // markers.c: 10⁵ operations over eight threads instead of 10⁶.
        .env("TINYAI_STRESS_OPS", "100000");
    run(
        &mut c_programs,
        "C programs (-fsanitize=thread) against libtinyai.a under ThreadSanitizer",
    )
}

fn miri() -> Result<(), TaskError> {
    if !nightly_with("miri", &["miri", "rust-src"]) {
        return Ok(());
    }
    let mut pure = nightly_cargo();
    // tinyai-format's unit tests: the crate has no `unsafe` of its own, so
    // this checks zerocopy's casts and crc32c's SIMD on the parser's paths
    // (its integration suites repeat those paths thousands of times).
    // tinyai-cache is left out: it has no `unsafe` either, and since the
    // workload generators and peers landed its engine tests take minutes
    // each under Miri (7 small claim tests: 208 s; the unit tests: 645 s).
    pure.args(["miri", "test", "-p", "tinyai-format", "--lib"])
        // Isolation stays on: the tests that read or write files or start
        // processes are ignored under Miri; the rest must not touch the host.
        .env_remove("MIRIFLAGS");
    run(&mut pure, "tinyai-format unit tests under Miri")?;

    let mut store = nightly_cargo();
    store
        .args(["miri", "test", "-p", "tinyai-store", "--lib"])
        // The tables test reads a fixture file.
        .env("MIRIFLAGS", "-Zmiri-disable-isolation");
    run(&mut store, "store unit tests under Miri")
}

pub fn run_task(args: &[String]) -> Result<(), TaskError> {
    let started = Instant::now();
    let result = match args.first().map(String::as_str) {
        None | Some("all") => loom().and_then(|()| tsan()).and_then(|()| miri()),
        Some("loom") => loom(),
        Some("tsan") => tsan(),
        Some("miri") => miri(),
        Some("--help" | "-h") => {
            print!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(TaskError::Usage(format!("unknown step {other:?}"))),
    };
    if result.is_ok() {
        println!(
            "== sanitize: done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    result
}
