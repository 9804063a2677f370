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
use tinyai_store::{MappedModel, RemoteConfig, StoreConfig};

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

/// all-MiniLM-L6-v2 converted with `tmai convert`, in S3: every layer read
/// remotely under a third of the model's size (with and without a disk
/// tier) equals the converted file's bytes.
#[test]
fn a_converted_minilm_in_s3_streams_every_byte_under_a_third() {
    const TEST: &str = "a_converted_minilm_in_s3_streams_every_byte_under_a_third";
    let source = match tinyai_format::real_model::ensure(tinyai_format::real_model::DEFAULT_TIMEOUT)
    {
        Ok(dir) => dir.join("model.safetensors"),
        Err(reason) => {
            return fixtures::skip(
                TEST,
                &format!("all-MiniLM-L6-v2 is not available: {reason}"),
            );
        }
    };
    let server = match moto::Moto::start(moto::free_port()) {
        Ok(server) => server,
        Err(reason) => return fixtures::skip(TEST, &format!("no S3 server: {reason}")),
    };
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("minilm.tmai");
    let run = tmai_with_env(
        &[
            "convert".as_ref(),
            source.as_os_str(),
            converted.as_os_str(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let bytes = std::fs::read(&converted).unwrap();
    server.create_bucket("minilm");
    server.put("minilm", "minilm.tmai", &bytes);
    let local = Model::parse(&bytes).unwrap();
    let budget = bytes.len() as u64 / 3;
    for cache_dir in [None, Some(dir.path().join("tier"))] {
        let remote = RemoteConfig {
            cache_dir,
            ..server.config()
        };
        let config = StoreConfig {
            max_cache_size: budget,
            ..StoreConfig::default()
        };
        let model = MappedModel::open_url_with("s3://minilm/minilm.tmai", config, &remote).unwrap();
        assert_eq!(model.layer_count(), local.layer_count());
        for layer in local.layers() {
            let guard = model.get(layer.index).unwrap();
            let start = layer.offset as usize;
            assert!(
                guard[..] == bytes[start..start + layer.length as usize],
                "layer {} differs",
                layer.index
            );
            drop(guard);
            assert!(model.memory_usage() <= budget);
        }
    }
}
