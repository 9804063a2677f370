//! Under an address-space limit smaller than the file, a Mapped open falls back to
//! owned buffers instead of failing. Runs the check in a child process, because
//! the limit applies to the whole process.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use tinyai_store::{Backend, MappedModel, StoreConfig};

const CHILD_ENV: &str = "TINYAI_ADDRESS_LIMIT_CHILD_MODEL";

fn vm_size_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[test]
fn mapped_open_falls_back_to_owned_under_an_address_space_limit() {
    let fixture = fixture(51, &[8 * MIB; 8], 1);
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "address_limit_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &fixture.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    if let Some(reason) = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|line| line.strip_prefix("child skipped: "))
    {
        tinyai_format::fixtures::skip(
            "mapped_open_falls_back_to_owned_under_an_address_space_limit",
            reason,
        );
        return;
    }
    assert!(
        stdout.contains("child ok") || stderr.contains("child ok"),
        "{stdout}\n{stderr}"
    );
}

/// The child half: limit this process's address space to what it uses now plus
/// 32 MiB, then open the 64 MiB model with the default (Mapped) backend.
#[test]
#[ignore = "run by mapped_open_falls_back_to_owned_under_an_address_space_limit in a child process"]
fn address_limit_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let Some(used) = vm_size_bytes() else {
        println!("child skipped: no /proc/self/status");
        return;
    };
    let limit = used + 32 * MIB;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit only changes this (child) process's limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) } != 0 {
        println!("child skipped: setrlimit refused");
        return;
    }
    let config = StoreConfig {
        max_cache_size: 16 * MIB,
        prefetch_threads: 0,
        ..StoreConfig::default()
    };
    let model = MappedModel::open(&path, config).unwrap();
    assert_eq!(model.backend(), Backend::Owned { direct_io: false });
    for index in 0..model.layer_count() {
        let guard = model.get(index).unwrap();
        let expected = tinyai_format::fixtures::fixture_byte(51, index, 12345);
        assert_eq!(guard[12345], expected);
    }
    println!("child ok");
}
