//! `tmai inspect` and `tmai verify` on `s3://` URLs (issue 17), against a
//! local S3 server (moto, installed by the tests into `target/moto-venv`).
#![allow(clippy::unwrap_used)]

mod common;

/// The S3 server the store's remote tests use (moto on 127.0.0.1).
#[path = "../../tinyai-store/tests/common/moto.rs"]
mod moto;

use common::{assert_clean_failure, tmai_with_env};
use tinyai_format::Model;
use tinyai_format::fixtures::{self, FixtureSpec};

#[test]
fn inspect_and_verify_a_model_in_s3() {
    const TEST: &str = "inspect_and_verify_a_model_in_s3";
    let server = match moto::Moto::start(moto::free_port()) {
        Ok(server) => server,
        Err(reason) => return fixtures::skip(TEST, &format!("no S3 server: {reason}")),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.tmai");
    let spec = FixtureSpec::uniform(31, 4096, &[300_000, 1 << 20, 12_345], 2);
    fixtures::write_fixture_file(&spec, &path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    server.create_bucket("tmai-cli");
    server.put("tmai-cli", "model.tmai", &bytes);
    let env = server.env();
    let url = "s3://tmai-cli/model.tmai";

    // The same JSON as for the local file (but the file's name).
    let remote = tmai_with_env(&["inspect", url, "--json"], &env);
    assert_eq!(remote.code, 0, "{remote:?}");
    let local = tmai_with_env(
        &["inspect".as_ref(), path.as_os_str(), "--json".as_ref()],
        &[],
    );
    let mut remote: serde_json::Value = serde_json::from_str(&remote.stdout).unwrap();
    let mut local: serde_json::Value = serde_json::from_str(&local.stdout).unwrap();
    remote["files"][0]["path"] = serde_json::Value::Null;
    local["files"][0]["path"] = serde_json::Value::Null;
    assert_eq!(remote, local);

    let run = tmai_with_env(&["verify", url], &env);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("all checksums match"), "{run:?}");

    // A flipped byte in the last layer: the same failure as a local file's.
    let at = {
        let model = Model::parse(&bytes).unwrap();
        let layer = model.layer(2).unwrap();
        (layer.offset + layer.length / 2) as usize
    };
    bytes[at] ^= 0x55;
    server.put("tmai-cli", "corrupt.tmai", &bytes);
    let run = tmai_with_env(&["verify", "s3://tmai-cli/corrupt.tmai"], &env);
    assert_clean_failure(&run, 1, "checksum mismatch in 1 of 3 layers");

    let run = tmai_with_env(&["inspect", "s3://tmai-cli/missing.tmai"], &env);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}
