//! The checked-in header must be what cbindgen generates from the source.

use std::path::Path;

#[test]
fn checked_in_header_is_current() -> Result<(), Box<dyn std::error::Error>> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header_path = crate_dir.join("include/tinyai/utils/mmap_loader.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .map_err(|error| format!("cbindgen.toml: {error}"))?;
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()?
        .write(&mut generated);
    if std::env::var_os("TINYAI_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&header_path, &generated)?;
        return Ok(());
    }
    let checked_in = std::fs::read(&header_path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale (or missing): the Rust API changed. Set TINYAI_UPDATE_HEADER=1 to rewrite it \
         (TINYAI_UPDATE_HEADER=1 cargo test -p tinyai-ffi --test header) and commit the result.",
        header_path.display()
    );
    Ok(())
}
