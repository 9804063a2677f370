//! A real S3-compatible server for tests of remote models: `moto` in server
//! mode on 127.0.0.1, installed from PyPI into `target/moto-venv` on first
//! use. Shared by the store's and the C library's tests (the latter include
//! this file by path).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tinyai_store::RemoteConfig;

/// A moto server on 127.0.0.1, stopped on drop — or when this process ends
/// without dropping it (a server shared through a `static`): it runs under a
/// small Python guard that stops it when its stdin, a pipe from this
/// process, closes.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe makes the guard stop the server and exit.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs `argv[1:]` until stdin closes, then stops it.
const GUARD: &str = "import subprocess, sys
server = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    sys.stdin.buffer.read()
finally:
    server.kill()
    server.wait()
";

/// The `moto_server` of a venv under `target/`, installed on first use;
/// `Err(reason)` where Python or PyPI is not there.
pub fn moto_server() -> Result<PathBuf, String> {
    static SERVER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            // `target/tmp` of whichever crate's tests: the venv sits beside it.
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("moto-venv");
            let server = venv.join("bin/moto_server");
            if server.exists() {
                return Ok(server);
            }
            let run = |command: &mut Command| -> Result<(), String> {
                let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
                if output.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{command:?} failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ))
                }
            };
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run(Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "moto[server]==5.2.5",
            ]))?;
            Ok(server)
        })
        .clone()
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    pub fn start(port: u16) -> Result<Moto, String> {
        Moto::start_with(port, &[])
    }

    /// [`Moto::start`] with environment variables for the server (e.g.
    /// `INITIAL_NO_AUTH_ACTION_COUNT`: after that many requests, it checks
    /// credentials against its own IAM, which knows none).
    pub fn start_with(port: u16, env: &[(&str, &str)]) -> Result<Moto, String> {
        let server = moto_server()?;
        let python = server.with_file_name("python3");
        let child = Command::new(python)
            .args(["-c", GUARD])
            .arg(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("moto_server: {e}"))?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if moto
                .request("GET", "/moto-api/", &[], &[])
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("moto_server did not answer within 30 s".into())
    }

    /// One plain (unsigned) HTTP/1.1 request; (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body_at = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(response.len(), |at| at + 4);
        Ok((status, response[body_at..].to_vec()))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .request("PUT", &format!("/{bucket}"), &[], &[])
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Uploads `bytes` as `bucket/key`, readable without credentials too.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("x-amz-acl", "public-read"),
        ];
        let (status, body) = self
            .request("PUT", &format!("/{bucket}/{key}"), &headers, bytes)
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Client settings for this server: its endpoint, any credentials, and
    /// quick retries (a stopped server fails a load in about a second).
    pub fn config(&self) -> RemoteConfig {
        let options = [
            ("aws_endpoint", format!("http://127.0.0.1:{}", self.port)),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "tinyai".into()),
            ("aws_secret_access_key", "tinyai".into()),
            ("aws_region", "us-east-1".into()),
        ];
        RemoteConfig {
            // moto answers a ranged GET in time proportional to the whole
            // object (0.2 s for 1 MiB of 256 MiB): one GET per 4 MiB layer.
            concurrency: 4,
            part_size: 8 << 20,
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(1),
            max_retries: 2,
            retry_timeout: Duration::from_secs(2),
            options: options
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..RemoteConfig::default()
        }
    }
}

impl Moto {
    /// The environment a C program (or any client reading `AWS_*`) needs
    /// to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "tinyai".into()),
            ("AWS_SECRET_ACCESS_KEY", "tinyai".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}
