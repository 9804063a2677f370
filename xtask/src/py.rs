//! `cargo xtask py-test`: builds the Python module `tinyai` (crates/tinyai-py)
//! as a wheel with maturin, installs it into a virtual environment, and runs
//! its pytest suite (crates/tinyai-py/tests, which includes the MiniLM example's
//! check against a NumPy reference).
//!
//! 1. The venv is `target/py-venv` (made with `python3 -m venv` if absent,
//!    reused otherwise).
//! 2. `pip install -r crates/tinyai-py/requirements-dev.txt` (pinned maturin,
//!    numpy, pytest, tokenizers), skipped when the venv's stamp says that very
//!    file was installed already.
//! 3. `maturin build --profile dev` into `target/py-wheels/` (the unoptimised
//!    profile: it shares nothing with the release build, and the suite's work
//!    is NumPy's and the store's I/O, so the optimiser would cost CI more than
//!    it saves), then `pip install --force-reinstall --no-deps` of the wheel.
//! 4. The real model (all-MiniLM-L6-v2) through
//!    [`tinyai_format::real_model::ensure`]; its directory goes to the tests as
//!    `TINYAI_REAL_MODEL_DIR`, or the reason it is missing as
//!    `TINYAI_REAL_MODEL_UNAVAILABLE` (the example's test then skips).
//! 5. `python -m pytest crates/tinyai-py/tests -q`.
//!
//! Where Python, venv or pip cannot be had (no python3, no network to PyPI),
//! the task prints `SKIP: py-test: <reason>` through
//! [`tinyai_format::fixtures::skip`] and succeeds, so `.ci/run` fails only
//! if `.ci/skip-allowlist` does not allow it (it does not: CI's machine has
//! them). A failing build or test fails the task. Each step prints its wall time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tinyai_format::fixtures::skip;
use tinyai_format::real_model;

use crate::TaskError;
use crate::args::{Arguments, workspace_root};

pub const USAGE: &str = "\
usage: cargo xtask py-test [--python PYTHON] [--pytest-args ARGS]

Builds the tinyai wheel (maturin, dev profile) into target/py-wheels/,
installs it into the venv target/py-venv (made and provisioned from
crates/tinyai-py/requirements-dev.txt when needed) and runs pytest on
crates/tinyai-py/tests.

  --python PYTHON      interpreter that makes the venv (default python3)
  --pytest-args ARGS   extra pytest arguments, split at spaces (e.g. \"-k zero_copy -x\")

Without python3, venv or PyPI it prints `SKIP: py-test: <reason>`.
";

/// The name under which a skip of this task is reported.
const SKIP_NAME: &str = "py-test";

fn step(label: &str, started: Instant) {
    println!(
        "py-test: {label} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

fn status(command: &mut Command) -> Result<bool, String> {
    command
        .status()
        .map(|status| status.success())
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Makes the venv unless it exists; `Err` is the reason to skip.
fn ensure_venv(python: &str, venv: &Path) -> Result<(), String> {
    if venv_python(venv).is_file() {
        return Ok(());
    }
    let made = status(Command::new(python).args(["-m", "venv"]).arg(venv))?;
    if made {
        Ok(())
    } else {
        let _ = std::fs::remove_dir_all(venv);
        Err(format!(
            "`{python} -m venv` failed (is the venv module installed?)"
        ))
    }
}

/// Installs the pinned requirements unless the stamp says they are; `Err` is
/// the reason to skip.
fn ensure_requirements(venv: &Path, requirements: &Path) -> Result<(), String> {
    let wanted = std::fs::read_to_string(requirements)
        .map_err(|error| format!("reading {}: {error}", requirements.display()))?;
    let stamp = venv.join(".tinyai-requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(());
    }
    let installed = status(
        Command::new(venv_python(venv))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(requirements),
    )?;
    if !installed {
        return Err(format!(
            "pip could not install {} (no network to PyPI?)",
            requirements.display()
        ));
    }
    std::fs::write(&stamp, wanted).map_err(|error| format!("writing {}: {error}", stamp.display()))
}

/// Entry point: `args` are the arguments after `py-test`.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    let arguments = Arguments::parse(args, &["python", "pytest-args"], &[])?;
    let python = arguments.value("python").unwrap_or("python3").to_owned();
    let extra: Vec<String> = arguments
        .value("pytest-args")
        .map(|text| text.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let root = workspace_root();
    let crate_dir = root.join("crates/tinyai-py");
    let venv = root.join("target/py-venv");
    let wheels = root.join("target/py-wheels");
    let total = Instant::now();

    let started = Instant::now();
    let provisioned = ensure_venv(&python, &venv)
        .and_then(|()| ensure_requirements(&venv, &crate_dir.join("requirements-dev.txt")));
    if let Err(reason) = provisioned {
        skip(SKIP_NAME, &reason);
        return Ok(());
    }
    step("venv target/py-venv ready", started);

    let started = Instant::now();
    if wheels.is_dir() {
        for entry in std::fs::read_dir(&wheels)
            .map_err(|error| TaskError::Failed(format!("listing {}: {error}", wheels.display())))?
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "whl") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let built = status(
        Command::new(venv.join("bin/maturin"))
            .args(["build", "--quiet", "--profile", "dev", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--out")
            .arg(&wheels)
            .arg("--interpreter")
            .arg(venv_python(&venv)),
    )
    .map_err(TaskError::Failed)?;
    if !built {
        return Err(TaskError::Failed("maturin build failed".into()));
    }
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|error| TaskError::Failed(format!("listing {}: {error}", wheels.display())))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| {
            TaskError::Failed(format!("maturin left no wheel in {}", wheels.display()))
        })?;
    let installed = status(
        Command::new(venv_python(&venv))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "--no-deps",
                "--force-reinstall",
            ])
            .arg(&wheel),
    )
    .map_err(TaskError::Failed)?;
    if !installed {
        return Err(TaskError::Failed(format!(
            "pip could not install {}",
            wheel.display()
        )));
    }
    step(
        &format!(
            "built and installed {}",
            wheel.file_name().unwrap_or_default().to_string_lossy()
        ),
        started,
    );

    let started = Instant::now();
    let mut pytest = Command::new(venv_python(&venv));
    match real_model::ensure(real_model::DEFAULT_TIMEOUT) {
        Ok(dir) => {
            pytest.env(real_model::DIR_VARIABLE, dir);
            step("real model ready", started);
        }
        Err(reason) => {
            pytest.env("TINYAI_REAL_MODEL_UNAVAILABLE", &reason);
            println!("py-test: the real model is not available: {reason}");
        }
    }

    let started = Instant::now();
    let passed = status(
        pytest
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(crate_dir.join("tests"))
            .args(&extra)
            .current_dir(&root),
    )
    .map_err(TaskError::Failed)?;
    step("pytest", started);
    step("total", total);
    if passed {
        Ok(())
    } else {
        Err(TaskError::Failed("the pytest suite failed".into()))
    }
}
