//! The device's limit on a file: `fio` (sequential read, O_DIRECT, 1 MiB
//! blocks, 16 in flight) where it is on PATH, else the bench's own O_DIRECT
//! reader with the same parameters. The page cache is dropped first.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tinyai_store::evict_file_from_page_cache;

use crate::progress;

/// Block size and requests in flight (issue 13's `fio` parameters).
pub const DEVICE_BLOCK: u64 = 1 << 20;
pub const DEVICE_DEPTH: u64 = 16;

/// How the device limit is measured in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    /// `fio --ioengine=libaio --iodepth=16`.
    FioLibaio,
    /// `fio --ioengine=psync --numjobs=16` (libaio refused).
    FioPsync,
    /// The bench's own reader: 16 threads of 1 MiB O_DIRECT `pread`s.
    Own,
}

/// One measurement of the device limit.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// Bytes per second.
    pub bandwidth: f64,
    /// Seconds the whole file takes at that bandwidth.
    pub seconds: f64,
}

/// The device-limit probe chosen for this run (set up once, used per round).
pub struct Device {
    tool: Tool,
    /// Why the tool is what it is (printed and recorded in the JSON).
    pub note: String,
}

impl Device {
    /// Chooses the tool: `fio` if on PATH (installing it with `apt-get` once,
    /// bounded by a timeout, when we are root and it is missing), trying libaio
    /// then psync on `path`; else the bench's own O_DIRECT reader.
    ///
    /// `TINYAI_BENCH_DEVICE=own` or `=fio-psync` forces a tool (to exercise
    /// the fallbacks).
    pub fn choose(path: &Path) -> Device {
        match std::env::var("TINYAI_BENCH_DEVICE").as_deref() {
            Ok("own") => {
                let note =
                    "forced by TINYAI_BENCH_DEVICE=own: the device limit is the bench's own \
                            O_DIRECT reader (1 MiB blocks, 16 in flight)"
                        .to_owned();
                progress(&note);
                return Device {
                    tool: Tool::Own,
                    note,
                };
            }
            Ok("fio-psync") => {
                let note =
                    "forced by TINYAI_BENCH_DEVICE=fio-psync: fio (psync), sequential read, \
                            O_DIRECT, 1 MiB blocks, 16 jobs over 16 slices of the file"
                        .to_owned();
                progress(&note);
                return Device {
                    tool: Tool::FioPsync,
                    note,
                };
            }
            _ => {}
        }
        let mut install_note = String::new();
        if !fio_on_path() {
            install_note = try_install_fio();
        }
        if !fio_on_path() {
            let note = format!(
                "fio is not on PATH{install_note}: the device limit is the bench's own O_DIRECT \
                 reader (1 MiB blocks, 16 in flight)"
            );
            progress(&note);
            return Device {
                tool: Tool::Own,
                note,
            };
        }
        for tool in [Tool::FioLibaio, Tool::FioPsync] {
            match fio(path, tool) {
                Ok(_) => {
                    let note = format!(
                        "fio{install_note} ({}): sequential read, O_DIRECT, 1 MiB blocks, {}",
                        if tool == Tool::FioLibaio {
                            "libaio"
                        } else {
                            "psync; libaio refused"
                        },
                        if tool == Tool::FioLibaio {
                            "iodepth 16"
                        } else {
                            "16 jobs over 16 slices of the file"
                        }
                    );
                    progress(&format!("device limit: {note}"));
                    return Device { tool, note };
                }
                Err(e) => progress(&format!("fio with {tool:?} failed: {e}")),
            }
        }
        let note = "fio is on PATH but failed on this file (libaio and psync): the device limit \
                    is the bench's own O_DIRECT reader (1 MiB blocks, 16 in flight)"
            .to_owned();
        progress(&note);
        Device {
            tool: Tool::Own,
            note,
        }
    }

    /// `"fio"` or `"own_odirect_reader"`, for the JSON.
    pub fn tool_name(&self) -> &'static str {
        match self.tool {
            Tool::FioLibaio => "fio_libaio",
            Tool::FioPsync => "fio_psync",
            Tool::Own => "own_odirect_reader",
        }
    }

    /// The device limit on `path`, cold. `Err` with the reason where it cannot
    /// be measured (O_DIRECT refused, fio failed).
    pub fn measure(&self, path: &Path) -> Result<Reading, String> {
        let length = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        match self.tool {
            Tool::Own => {
                let seconds = device_read(path)?;
                Ok(Reading {
                    bandwidth: length as f64 / seconds,
                    seconds,
                })
            }
            tool => {
                let bandwidth = fio(path, tool)?;
                Ok(Reading {
                    bandwidth,
                    seconds: length as f64 / bandwidth,
                })
            }
        }
    }
}

fn fio_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("fio").is_file()))
}

/// `apt-get install -y fio`, once, quietly, at most 120 s, when we are root
/// and `apt-get` exists. Returns a note for the report ("" when not tried).
fn try_install_fio() -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(apt) = ["/usr/bin/apt-get", "/bin/apt-get"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        return String::new();
    };
    if !root {
        return String::new();
    }
    progress("fio not on PATH: trying `apt-get install -y fio` (at most 120 s)");
    let child = Command::new(apt)
        .args(["install", "-y", "-q", "fio"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return " (apt-get could not be started)".to_owned();
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                return " (`apt-get install fio` succeeded)".to_owned();
            }
            Ok(Some(status)) => return format!(" (apt-get install fio failed: {status})"),
            Ok(None) if start.elapsed() > Duration::from_secs(120) => {
                let _ = child.kill();
                let _ = child.wait();
                return " (apt-get install fio timed out after 120 s)".to_owned();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return format!(" (apt-get install fio: {e})"),
        }
    }
}

/// One `fio` run over `path`; returns bytes per second.
fn fio(path: &Path, tool: Tool) -> Result<f64, String> {
    evict_file_from_page_cache(path).map_err(|e| e.to_string())?;
    let length = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let whole = (length / DEVICE_BLOCK).max(1) * DEVICE_BLOCK;
    let mut command = Command::new("fio");
    command
        .arg("--name=device")
        .arg(format!("--filename={}", path.display()))
        .args([
            "--readonly",
            "--rw=read",
            "--direct=1",
            "--bs=1M",
            "--output-format=json",
        ]);
    if tool == Tool::FioLibaio {
        command.args(["--ioengine=libaio", "--iodepth=16"]);
        command.arg(format!("--size={whole}"));
    } else {
        let slice = (whole / DEVICE_DEPTH / DEVICE_BLOCK).max(1) * DEVICE_BLOCK;
        command.args(["--ioengine=psync", "--numjobs=16", "--group_reporting"]);
        command.arg(format!("--size={slice}"));
        command.arg(format!("--offset_increment={slice}"));
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running fio: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "fio exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let start = text.find('{').ok_or("fio printed no JSON")?;
    let json: serde_json::Value =
        serde_json::from_str(&text[start..]).map_err(|e| format!("fio's JSON: {e}"))?;
    let jobs = json["jobs"].as_array().ok_or("fio's JSON has no jobs")?;
    let bandwidth: f64 = jobs
        .iter()
        .filter_map(|job| job["read"]["bw_bytes"].as_f64())
        .sum();
    if bandwidth > 0.0 {
        Ok(bandwidth)
    } else {
        Err(format!(
            "fio reported no read bandwidth: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The bench's own device-limit reader on `path`, cold: the whole file in
/// 1 MiB O_DIRECT reads, 16 outstanding at once (16 threads, thread `t`
/// reading blocks `t`, `t + 16`, ...), into aligned buffers. Returns seconds.
pub fn device_read(path: &Path) -> Result<f64, String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    evict_file_from_page_cache(path).map_err(|e| e.to_string())?;
    let length = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let blocks = length.div_ceil(DEVICE_BLOCK);
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
    };
    open().map_err(|e| format!("O_DIRECT refused: {e}"))?;
    let start = Instant::now();
    let ok = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..DEVICE_DEPTH)
            .map(|first| {
                scope.spawn(move || {
                    let Ok(file) = open() else { return false };
                    // An aligned 1 MiB window inside an over-allocated buffer.
                    let mut storage = vec![0u8; (DEVICE_BLOCK + 4096) as usize];
                    let skip = storage.as_ptr().align_offset(4096);
                    let buffer = &mut storage[skip..skip + DEVICE_BLOCK as usize];
                    let mut block = first;
                    while block < blocks {
                        if file.read_at(buffer, block * DEVICE_BLOCK).is_err() {
                            return false;
                        }
                        block += DEVICE_DEPTH;
                    }
                    std::hint::black_box(buffer[0]);
                    true
                })
            })
            .collect();
        workers
            .into_iter()
            .all(|worker| worker.join().unwrap_or(false))
    });
    if ok {
        Ok(start.elapsed().as_secs_f64())
    } else {
        Err("an O_DIRECT read failed".to_owned())
    }
}
