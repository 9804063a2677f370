//! `cargo xtask fixtures`: writes the deterministic fixture models.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tinyai_format::fixtures as presets;
use tinyai_format::{Model, limits};

use crate::TaskError;
use crate::args::{Arguments, format_size, parse_size, workspace_root};

/// Usage of this command.
pub const USAGE: &str = "\
usage: cargo xtask fixtures [--size SIZE] [--out DIR]
       cargo xtask fixtures --update-golden

Writes the deterministic fixture models (content derived from a seed, see
tinyai_format::fixtures) to DIR (default: target/fixtures/):
  tiny.tmai           3 small layers, one f32 tensor each
  multi_tensor.tmai   several tensors of many dtypes per layer (incl. GGML Q4_0), metadata
  legacy_v1.tmai      the original TinyAI C test file: 10 layers x 1 MiB, layer i = byte i
  large-SIZE.tmai     with --size (e.g. 1GiB): many layers of varied sizes, streamed;
                      never commit it

--update-golden rewrites the small golden files committed under fixtures/
(tiny.tmai, multi_tensor.tmai, legacy_v1_small.tmai). Do this only when the
format changes on purpose: tests/golden.rs fails when the writer's output for
them changes.
";

/// Runs the command.
pub fn run(args: &[String]) -> Result<(), TaskError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let arguments = Arguments::parse(args, &["size", "out"], &["update-golden"])?;
    if arguments.flag("update-golden") {
        if arguments.value("size").is_some() || arguments.value("out").is_some() {
            return Err(TaskError::Usage(
                "--update-golden takes no other option".to_owned(),
            ));
        }
        return update_golden(&workspace_root().join("fixtures"));
    }
    let out = arguments
        .value("out")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("fixtures"));
    let size = arguments.value("size").map(parse_size).transpose()?;
    std::fs::create_dir_all(&out)
        .map_err(|e| TaskError::Failed(format!("creating {}: {e}", out.display())))?;

    let path = out.join("tiny.tmai");
    presets::write_fixture_file(&presets::tiny(), &path)?;
    report(&path)?;
    let path = out.join("multi_tensor.tmai");
    presets::write_fixture_file(&presets::multi_tensor(), &path)?;
    report(&path)?;
    let path = out.join("legacy_v1.tmai");
    presets::write_legacy_file(&presets::legacy_c_test_model(), &path)?;
    report(&path)?;
    if let Some(size) = size {
        if size == 0 {
            return Err(TaskError::Usage("--size must be above 0".to_owned()));
        }
        let path = out.join(format!("large-{}.tmai", format_size(size)));
        println!("writing {} (streamed) ...", path.display());
        presets::write_fixture_file(&presets::large(size), &path)?;
        report(&path)?;
    }
    Ok(())
}

fn update_golden(dir: &Path) -> Result<(), TaskError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TaskError::Failed(format!("creating {}: {e}", dir.display())))?;
    for (name, bytes) in presets::golden_files()? {
        let path = dir.join(name);
        let unchanged = std::fs::read(&path).is_ok_and(|old| old == bytes);
        std::fs::write(&path, &bytes)
            .map_err(|e| TaskError::Failed(format!("writing {}: {e}", path.display())))?;
        println!(
            "{} {} ({} bytes)",
            if unchanged { "unchanged" } else { "updated" },
            path.display(),
            bytes.len()
        );
    }
    Ok(())
}

/// Prints a one-line summary of the file at `path`, reading only its header and
/// tables (as a reader that does not map the file would).
fn report(path: &Path) -> Result<(), TaskError> {
    let failed = |e: std::io::Error| TaskError::Failed(format!("reading {}: {e}", path.display()));
    let mut file = File::open(path).map_err(failed)?;
    let file_length = file.metadata().map_err(failed)?.len();
    let mut head = vec![0u8; limits::MAX_HEADER_SIZE.min(file_length as usize)];
    file.read_exact(&mut head).map_err(failed)?;
    let location = Model::locate_tables(&head, file_length)?;
    let mut tables = vec![0u8; (location.tables.end - location.tables.start) as usize];
    file.seek(SeekFrom::Start(location.tables.start))
        .map_err(failed)?;
    file.read_exact(&mut tables).map_err(failed)?;
    let model = Model::parse_parts(&head, &tables, location.tables.start, file_length)?;
    println!(
        "wrote {} ({} bytes, v{}.{}{}, {} layers, {} tensors, name {:?})",
        path.display(),
        file_length,
        model.version().major,
        model.version().minor,
        if model.is_legacy() { " legacy" } else { "" },
        model.layer_count(),
        model.tensor_count(),
        model.metadata_value("general.name").unwrap_or(""),
    );
    Ok(())
}
