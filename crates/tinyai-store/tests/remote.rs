//! Models in object storage (issue 17, feature `remote`), against a real
//! S3-compatible server: `moto` in server mode on 127.0.0.1, installed from
//! PyPI into a venv under `target/` on first use (it says SKIP where that
//! cannot be done). Every byte must equal the local file's, under a budget of
//! a third, over `s3://` and `http://`; a missing key or bucket, bad
//! credentials, an object that is not a model, an object overwritten while
//! open and a server that goes away are typed errors, never a panic.
#![cfg(feature = "remote")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Mutex, OnceLock};

use common::moto::{Moto, free_port, moto_server};
use common::*;
use tinyai_store::{Backend, MappedModel, RemoteConfig, StoreConfig, StoreError};

/// The shared server of this test binary, or why there is none.
fn shared_moto() -> Result<&'static Mutex<Moto>, String> {
    static MOTO: OnceLock<Result<Mutex<Moto>, String>> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start(free_port()).map(Mutex::new))
        .as_ref()
        .map_err(Clone::clone)
}

macro_rules! moto_or_skip {
    ($name:expr) => {
        match shared_moto() {
            Ok(moto) => moto,
            Err(reason) => {
                tinyai_format::fixtures::skip($name, &format!("no S3 server: {reason}"));
                return;
            }
        }
    };
}

fn assert_every_byte(model: &MappedModel, fixture: &Fixture) {
    for index in 0..model.layer_count() {
        assert_layer_matches(model, fixture, index);
        assert!(model.memory_usage() <= model.config().max_cache_size);
    }
}

#[test]
#[cfg_attr(miri, ignore = "a server process")]
fn every_byte_of_a_remote_model_equals_the_file_under_a_third_of_it() {
    // 256 MiB: over s3:// without a disk tier, over http:// with one.
    let moto = moto_or_skip!("every_byte_of_a_remote_model_equals_the_file_under_a_third_of_it");
    let fixture = fixture(171, &[4 * MIB; 64], 3);
    let bytes = std::fs::read(&fixture.path).unwrap();
    let budget = bytes.len() as u64 / 3;
    let moto = moto.lock().unwrap();
    moto.create_bucket("every-byte");
    moto.put("every-byte", "model.tmai", &bytes);
    let remote = moto.config();
    let model = MappedModel::open_url_with(
        "s3://every-byte/model.tmai",
        config(budget, Backend::Mapped),
        &remote,
    )
    .unwrap();
    assert_eq!(model.layer_count(), 64);
    assert_every_byte(&model, &fixture);
    // The same object over plain HTTP (it is public-read), through a disk tier.
    let tier = tempdir();
    let tiered = RemoteConfig {
        cache_dir: Some(tier.path().to_path_buf()),
        ..remote
    };
    let url = format!("http://127.0.0.1:{}/every-byte/model.tmai", moto.port);
    let model = MappedModel::open_url_with(&url, config(budget, Backend::Mapped), &tiered).unwrap();
    assert_every_byte(&model, &fixture);
}

#[test]
#[cfg_attr(miri, ignore = "a server process")]
fn missing_objects_and_non_models_are_typed_errors() {
    let moto = moto_or_skip!("missing_objects_and_non_models_are_typed_errors");
    let moto = moto.lock().unwrap();
    moto.create_bucket("errors");
    moto.put(
        "errors",
        "notes.txt",
        b"this is not a model, just some text",
    );
    let remote = moto.config();
    let open =
        |url: &str| MappedModel::open_url_with(url, config(64 * MIB, Backend::Mapped), &remote);
    let not_found = |result: Result<MappedModel, StoreError>| match result {
        Err(StoreError::Io { source, .. }) => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    };
    assert!(not_found(open("s3://errors/missing.tmai")), "a missing key");
    assert!(
        not_found(open("s3://no-such-bucket/model.tmai")),
        "a missing bucket"
    );
    assert!(matches!(
        open("s3://errors/notes.txt"),
        Err(StoreError::Format { .. })
    ));
    // A layer whose bytes do not match its checksum is not served (remote
    // layers are verified by default).
    let checked = fixture(177, &[MIB; 3], 2);
    let mut bytes = std::fs::read(&checked.path).unwrap();
    let at = (fixture_layer_offset(&bytes, 1) + 100) as usize;
    bytes[at] ^= 0x20;
    moto.put("errors", "corrupt.tmai", &bytes);
    let model = open("s3://errors/corrupt.tmai").unwrap();
    assert_layer_matches(&model, &checked, 0);
    assert!(matches!(model.get(1), Err(StoreError::Format { .. })));
    drop(model);
    // A model cut short: its tables lie past the object's end.
    let fixture = fixture(174, &[MIB; 4], 2);
    let bytes = std::fs::read(&fixture.path).unwrap();
    moto.put("errors", "truncated.tmai", &bytes[..bytes.len() / 2]);
    assert!(matches!(
        open("s3://errors/truncated.tmai"),
        Err(StoreError::Format { .. })
    ));
    assert!(matches!(
        open("gs://errors/model.tmai"),
        Err(StoreError::InvalidConfig(_) | StoreError::Remote { .. })
    ));
    assert!(matches!(open("not a url"), Err(StoreError::Remote { .. })));
}

#[test]
#[cfg_attr(miri, ignore = "a server process")]
fn an_object_overwritten_while_open_is_file_changed() {
    let moto = moto_or_skip!("an_object_overwritten_while_open_is_file_changed");
    let fixture = fixture(172, &[2 * MIB; 8], 2);
    let mut bytes = std::fs::read(&fixture.path).unwrap();
    let moto = moto.lock().unwrap();
    moto.create_bucket("overwritten");
    moto.put("overwritten", "model.tmai", &bytes);
    let model = MappedModel::open_url_with(
        "s3://overwritten/model.tmai",
        config(64 * MIB, Backend::Mapped),
        &moto.config(),
    )
    .unwrap();
    assert_layer_matches(&model, &fixture, 0);
    // Same length, other bytes: only the ETag tells.
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    moto.put("overwritten", "model.tmai", &bytes);
    let charged = model.memory_usage();
    let error = model.get(7).map(|_| ()).unwrap_err();
    assert!(matches!(error, StoreError::FileChanged { .. }), "{error}");
    assert_eq!(
        model.memory_usage(),
        charged,
        "a failed load charges nothing"
    );
}

#[test]
#[cfg_attr(miri, ignore = "a server process")]
fn a_server_that_goes_away_is_an_error_at_the_get_and_the_model_recovers() {
    const NAME: &str = "a_server_that_goes_away_is_an_error_at_the_get_and_the_model_recovers";
    if let Err(reason) = moto_server() {
        tinyai_format::fixtures::skip(NAME, &format!("no S3 server: {reason}"));
        return;
    }
    let fixture = fixture(173, &[2 * MIB; 8], 2);
    let bytes = std::fs::read(&fixture.path).unwrap();
    let port = free_port();
    let upload = |moto: &Moto| {
        moto.create_bucket("goes-away");
        moto.put("goes-away", "model.tmai", &bytes);
    };
    let moto = Moto::start(port).unwrap();
    upload(&moto);
    let model = MappedModel::open_url_with(
        "s3://goes-away/model.tmai",
        StoreConfig {
            prefetch_enabled: false,
            ..config(64 * MIB, Backend::Mapped)
        },
        &moto.config(),
    )
    .unwrap();
    assert_layer_matches(&model, &fixture, 0);
    let charged = model.memory_usage();
    drop(moto);
    let error = model.get(5).map(|_| ()).unwrap_err();
    assert!(matches!(error, StoreError::Remote { .. }), "{error}");
    assert_eq!(
        model.memory_usage(),
        charged,
        "a failed load charges nothing"
    );
    // Back, with the same bytes (the same ETag): the model goes on.
    let moto = Moto::start(port).unwrap();
    upload(&moto);
    for index in 0..model.layer_count() {
        assert_layer_matches(&model, &fixture, index);
    }
}

#[test]
#[cfg_attr(miri, ignore = "a server process")]
fn credentials_the_server_refuses_are_permission_denied() {
    const NAME: &str = "credentials_the_server_refuses_are_permission_denied";
    if let Err(reason) = moto_server() {
        tinyai_format::fixtures::skip(NAME, &format!("no S3 server: {reason}"));
        return;
    }
    // Two requests without checks (the bucket and the upload), then moto
    // checks signatures against its own IAM, which knows no key.
    let moto = Moto::start_with(free_port(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]).unwrap();
    let fixture = fixture(175, &[MIB; 2], 1);
    moto.create_bucket("locked");
    moto.put(
        "locked",
        "model.tmai",
        &std::fs::read(&fixture.path).unwrap(),
    );
    match MappedModel::open_url_with(
        "s3://locked/model.tmai",
        config(64 * MIB, Backend::Mapped),
        &moto.config(),
    ) {
        Err(StoreError::Io { source, .. }) => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            );
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

/// The `.layer` files of a disk tier (all objects), and whether any
/// `.partial` file is left.
fn tier_files(root: &std::path::Path) -> (Vec<std::path::PathBuf>, bool) {
    let mut layers = Vec::new();
    let mut partial = false;
    for dir in std::fs::read_dir(root).unwrap().flatten() {
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let path = file.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("layer") => layers.push(path),
                Some("partial") => partial = true,
                _ => {}
            }
        }
    }
    layers.sort();
    (layers, partial)
}

#[test]
#[cfg_attr(miri, ignore = "a server process")]
fn a_disk_tier_serves_later_opens_refetches_damaged_entries_and_keeps_its_size() {
    const NAME: &str =
        "a_disk_tier_serves_later_opens_refetches_damaged_entries_and_keeps_its_size";
    if let Err(reason) = moto_server() {
        tinyai_format::fixtures::skip(NAME, &format!("no S3 server: {reason}"));
        return;
    }
    let fixture = fixture(176, &[MIB; 8], 2);
    let bytes = std::fs::read(&fixture.path).unwrap();
    let tier = tempdir();
    let moto = Moto::start(free_port()).unwrap();
    moto.create_bucket("tiered");
    moto.put("tiered", "model.tmai", &bytes);
    let remote = RemoteConfig {
        cache_dir: Some(tier.path().to_path_buf()),
        ..moto.config()
    };
    let open = |remote: &RemoteConfig| {
        MappedModel::open_url_with(
            "s3://tiered/model.tmai",
            StoreConfig {
                prefetch_enabled: false,
                ..config(64 * MIB, Backend::Mapped)
            },
            remote,
        )
        .unwrap()
    };
    let model = open(&remote);
    assert_every_byte(&model, &fixture);
    drop(model);
    let (entries, partial) = tier_files(tier.path());
    assert_eq!(entries.len(), 8, "one entry per layer: {entries:?}");
    assert!(!partial);

    // A damaged entry is fetched again, and rewritten intact.
    let damaged = &entries[3];
    let good = std::fs::read(damaged).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 0x01;
    std::fs::write(damaged, &bad).unwrap();
    let model = open(&remote);
    assert_every_byte(&model, &fixture);
    assert_eq!(std::fs::read(damaged).unwrap(), good);
    drop(model);

    // A later open (one GET for the header) reads every layer from the tier,
    // with the server gone.
    let model = open(&remote);
    drop(moto);
    assert_every_byte(&model, &fixture);
    drop(model);

    // A tier of three layers' size keeps the three used last.
    let small = tempdir();
    let moto = Moto::start(free_port()).unwrap();
    moto.create_bucket("tiered");
    moto.put("tiered", "model.tmai", &bytes);
    let remote = RemoteConfig {
        cache_dir: Some(small.path().to_path_buf()),
        cache_max_bytes: 3 * (MIB + 4),
        ..moto.config()
    };
    let model = open(&remote);
    assert_every_byte(&model, &fixture);
    let (entries, partial) = tier_files(small.path());
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(
        entries[2]
            .to_string_lossy()
            .contains(&format!("{:016x}", model.descriptor(7).unwrap().offset))
    );
    assert!(!partial);
    // The server goes away mid-stream: loads fail, and no .partial is left.
    drop(moto);
    model.release(0).unwrap();
    assert!(matches!(model.get(0), Err(StoreError::Remote { .. })));
    assert!(!tier_files(small.path()).1);
}

/// Offset of layer `index` in a `.tmai` file's bytes.
fn fixture_layer_offset(bytes: &[u8], index: u64) -> u64 {
    tinyai_format::Model::parse(bytes)
        .unwrap()
        .layer(index)
        .unwrap()
        .offset
}

// Faults on demand: a local HTTP server of files with ranged GETs
// (common/range_server.rs) that answers 503 or holds requests when told to.

/// A remote config for fault tests: short timeouts, `retries` retries.
fn fault_config(retries: usize, timeout: std::time::Duration) -> RemoteConfig {
    RemoteConfig {
        max_retries: retries,
        timeout,
        connect_timeout: std::time::Duration::from_secs(2),
        ..RemoteConfig::default()
    }
}

#[test]
#[cfg_attr(miri, ignore = "a server")]
fn transient_server_errors_are_retried_and_a_stalled_request_times_out() {
    use common::range_server::RangeServer;
    use std::time::{Duration, Instant};
    let server = RangeServer::start(2).unwrap();
    let fixture = fixture(177, &[2 * MIB; 8], 2);
    let url = server.serve("model.tmai", &fixture.path);
    let store = StoreConfig {
        prefetch_enabled: false,
        ..config(64 * MIB, Backend::Mapped)
    };
    let model =
        MappedModel::open_url_with(&url, store, &fault_config(3, Duration::from_secs(2))).unwrap();

    // Two 503s, then the answer: retried with backoff, the layer arrives.
    let before = server.gets();
    server.fail_next(2);
    assert_layer_matches(&model, &fixture, 0);
    assert_eq!(
        server.gets() - before,
        3,
        "two 503s and the retry that served"
    );

    // More 503s than retries: an error at the get, nothing charged; the
    // model goes on once the server answers again.
    let charged = model.memory_usage();
    server.fail_next(100);
    let error = model.get(1).map(|_| ()).unwrap_err();
    assert!(matches!(error, StoreError::Remote { .. }), "{error}");
    assert_eq!(
        model.memory_usage(),
        charged,
        "a failed load charges nothing"
    );
    server.fail_next(0);
    assert_layer_matches(&model, &fixture, 1);

    // A request held past the timeout (and its retries held too): an error
    // well before the server would have answered.
    let charged = model.memory_usage();
    server.stall_next(100, Duration::from_secs(30));
    let started = Instant::now();
    let error = model.get(2).map(|_| ()).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(error, StoreError::Remote { .. }), "{error}");
    assert!(
        waited < Duration::from_secs(20),
        "a 2 s timeout waited {waited:?}"
    );
    assert_eq!(
        model.memory_usage(),
        charged,
        "a failed load charges nothing"
    );
    server.stall_next(0, Duration::ZERO);
    for index in 0..model.layer_count() {
        assert_layer_matches(&model, &fixture, index);
    }
}

#[test]
#[cfg_attr(miri, ignore = "a server")]
fn closing_a_remote_model_ends_its_requests_in_flight() {
    use common::range_server::RangeServer;
    use std::time::{Duration, Instant};
    let server = RangeServer::start(2).unwrap();
    let fixture = fixture(178, &[2 * MIB; 16], 2);
    let url = server.serve("model.tmai", &fixture.path);
    let store = StoreConfig {
        prefetch_threads: 2,
        ..config(64 * MIB, Backend::Mapped)
    };
    // The default timeout (60 s) is longer than the stall: only the close
    // can end these requests early.
    let model = MappedModel::open_url_with(&url, store, &RemoteConfig::default()).unwrap();
    let before = server.gets();
    server.stall_next(usize::MAX, Duration::from_secs(40));
    for index in 0..model.layer_count() {
        let _ = model.prefetch(index).unwrap();
    }
    let waiting = Instant::now();
    while server.gets() == before {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "no prefetch reached the server"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let closing = Instant::now();
    drop(model);
    let took = closing.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "closing waited {took:?} for requests the server holds 40 s"
    );
}

#[test]
#[cfg_attr(miri, ignore = "a server")]
fn a_remote_stream_keeps_several_layers_in_flight_with_one_prefetch_thread() {
    use common::range_server::RangeServer;
    use std::time::Duration;
    // A distant server (30 ms before each answer), one GET per layer, one
    // prefetch thread: the queued read-aheads' GETs must all be in flight,
    // not one layer at a time behind the prefetch thread.
    let server = RangeServer::start(2).unwrap();
    let fixture = fixture(179, &[MIB; 24], 2);
    let url = server.serve("model.tmai", &fixture.path);
    server.set_latency(Duration::from_millis(30));
    let budget = 12 * MIB;
    let store = StoreConfig {
        prefetch_threads: 1,
        ..config(budget, Backend::Mapped)
    };
    let model = MappedModel::open_url_with(&url, store, &RemoteConfig::default()).unwrap();
    for pass in 0..2 {
        for index in 0..model.layer_count() {
            assert_layer_matches(&model, &fixture, index);
            assert!(
                model.memory_usage() <= budget,
                "pass {pass}, layer {index}: {} charged",
                model.memory_usage()
            );
        }
    }
    let most = server.most_gets_at_once();
    assert!(
        most >= 4,
        "at most {most} GETs were in flight at once (one prefetch thread and the caller: 2)"
    );
    let stats = model.stats();
    assert_eq!(stats.prefetch_wasted, 0, "{stats:?}");
}

#[test]
#[cfg_attr(miri, ignore = "a server")]
fn a_layer_that_fails_its_checksum_is_not_kept_in_the_disk_tier() {
    use common::range_server::RangeServer;
    let server = RangeServer::start(2).unwrap();
    let fixture = fixture(180, &[MIB; 4], 2);
    let mut bytes = std::fs::read(&fixture.path).unwrap();
    let at = fixture_layer_offset(&bytes, 2) as usize + 4321;
    bytes[at] ^= 0x20;
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.tmai");
    std::fs::write(&corrupt, &bytes).unwrap();
    let url = server.serve("corrupt.tmai", &corrupt);
    let tier = dir.path().join("tier");
    let remote = RemoteConfig {
        cache_dir: Some(tier.clone()),
        ..RemoteConfig::default()
    };
    let store = StoreConfig {
        prefetch_enabled: false,
        ..config(64 * MIB, Backend::Mapped)
    };
    let model = MappedModel::open_url_with(&url, store, &remote).unwrap();
    for round in 0..2 {
        let error = model.get(2).map(|_| ()).unwrap_err();
        assert!(matches!(error, StoreError::Format { .. }), "{error}");
        let (kept, _) = tier_files(&tier);
        assert!(
            kept.is_empty(),
            "round {round}: the tier kept bytes that failed their checksum: {kept:?}"
        );
    }
    // The good layers are kept.
    assert_layer_matches(&model, &fixture, 1);
    assert_eq!(tier_files(&tier).0.len(), 1);
}
