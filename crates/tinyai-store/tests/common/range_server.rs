//! A local HTTP server of files with ranged GETs, for the remote tests that
//! need faults on demand (answers of 503, stalls) and for the remote
//! benchmark (a ranged GET costs what its range costs; moto reads the whole
//! object for each one). Built on hyper; it answers `GET` with `Range:
//! bytes=…` (206 and `Content-Range`) or without (200), `ETag`,
//! `Last-Modified`, and `If-Match` (412 when it does not match). The body is
//! sent as it is read from the file, 1 MiB at a time.
//!
//! Shared by the store's tests and its `bench_remote` example (which includes
//! this file by path).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, LAST_MODIFIED, RANGE,
};
use hyper::{Method, Request, Response, StatusCode};

type Body = BoxBody<Bytes, std::io::Error>;

/// Bytes per body frame.
const CHUNK: u64 = 1 << 20;

/// A file being served.
struct Served {
    file: Arc<std::fs::File>,
    len: u64,
    e_tag: String,
}

/// What the server is told to do wrong, and what it has done.
#[derive(Default)]
struct Faults {
    /// The next this many GETs are answered 503.
    fail_next: AtomicUsize,
    /// The next this many GETs wait `stall_ms` before answering.
    stall_next: AtomicUsize,
    stall_ms: AtomicU64,
    /// Every GET waits this long before answering (a distant server's
    /// time to first byte).
    latency_us: AtomicU64,
    /// GETs received (faulted ones included).
    gets: AtomicUsize,
    /// GETs received and not answered yet (their bodies not counted), and
    /// the most there were at once.
    waiting: AtomicUsize,
    most_waiting: AtomicUsize,
    /// Body bytes sent.
    bytes_sent: AtomicU64,
}

struct State {
    files: Mutex<HashMap<String, Served>>,
    faults: Faults,
}

/// The server, on 127.0.0.1 and a port of its own; it stops on drop.
pub struct RangeServer {
    port: u16,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RangeServer {
    /// Starts a server with `threads` worker threads.
    pub fn start(threads: usize) -> std::io::Result<RangeServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("range-server")
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let state = Arc::new(State {
            files: Mutex::new(HashMap::new()),
            faults: Faults::default(),
        });
        let shared = Arc::clone(&state);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RangeServer {
            port,
            state,
            runtime: Some(runtime),
        })
    }

    /// Serves the file at `path` as `/name` (again: with its new contents and
    /// a new ETag); returns its URL.
    pub fn serve(&self, name: &str, path: &Path) -> String {
        let file = std::fs::File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        let e_tag = format!(
            "\"{:x}-{:x}-{:x}\"",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        let served = Served {
            file: Arc::new(file),
            len: meta.len(),
            e_tag,
        };
        self.state
            .files
            .lock()
            .unwrap()
            .insert(name.to_owned(), served);
        self.url(name)
    }

    /// The URL of `/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Answers the next `n` GETs with 503 Service Unavailable.
    pub fn fail_next(&self, n: usize) {
        self.state.faults.fail_next.store(n, Ordering::SeqCst);
    }

    /// Holds the next `n` GETs for `stall` before answering them.
    pub fn stall_next(&self, n: usize, stall: Duration) {
        let faults = &self.state.faults;
        faults
            .stall_ms
            .store(stall.as_millis() as u64, Ordering::SeqCst);
        faults.stall_next.store(n, Ordering::SeqCst);
    }

    /// Makes every GET wait `latency` before answering, as a distant
    /// server's time to first byte.
    pub fn set_latency(&self, latency: Duration) {
        let us = latency.as_micros() as u64;
        self.state.faults.latency_us.store(us, Ordering::SeqCst);
    }

    /// GETs received so far.
    pub fn gets(&self) -> usize {
        self.state.faults.gets.load(Ordering::SeqCst)
    }

    /// The most GETs that were waiting for their answers at once.
    pub fn most_gets_at_once(&self) -> usize {
        self.state.faults.most_waiting.load(Ordering::SeqCst)
    }

    /// Body bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.faults.bytes_sent.load(Ordering::SeqCst)
    }
}

/// A GET waiting for its answer (counted while it lives).
struct Waiting<'a>(&'a Faults);

impl<'a> Waiting<'a> {
    fn new(faults: &'a Faults) -> Waiting<'a> {
        let now = faults.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        faults.most_waiting.fetch_max(now, Ordering::SeqCst);
        Waiting(faults)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response
}

async fn answer(state: &Arc<State>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let faults = &state.faults;
    let _waiting = (request.method() == Method::GET).then(|| Waiting::new(faults));
    if request.method() == Method::GET {
        faults.gets.fetch_add(1, Ordering::SeqCst);
        let latency = faults.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if take_one(&faults.stall_next) {
            let ms = faults.stall_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if take_one(&faults.fail_next) {
            return status(StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    let name = request.uri().path().trim_start_matches('/').to_owned();
    let (file, len, e_tag) = match state.files.lock().unwrap().get(&name) {
        Some(served) => (Arc::clone(&served.file), served.len, served.e_tag.clone()),
        None => return status(StatusCode::NOT_FOUND),
    };
    if let Some(wanted) = request.headers().get(IF_MATCH) {
        let wanted = wanted.to_str().unwrap_or("");
        if wanted.trim() != "*" && !wanted.split(',').any(|tag| tag.trim() == e_tag) {
            return status(StatusCode::PRECONDITION_FAILED);
        }
    }
    let range = match request.headers().get(RANGE) {
        None => None,
        Some(value) => {
            let parsed = value
                .to_str()
                .ok()
                .and_then(|text| http_range_header::parse_range_header(text).ok())
                .and_then(|ranges| ranges.validate(len).ok());
            match parsed.as_deref() {
                Some([one]) => Some(*one.start()..*one.end() + 1),
                _ => {
                    let mut refused = status(StatusCode::RANGE_NOT_SATISFIABLE);
                    refused
                        .headers_mut()
                        .insert(CONTENT_RANGE, format!("bytes */{len}").parse().unwrap());
                    return refused;
                }
            }
        }
    };
    let (code, span) = match &range {
        Some(span) => (StatusCode::PARTIAL_CONTENT, span.clone()),
        None => (StatusCode::OK, 0..len),
    };
    let body = if request.method() == Method::HEAD {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed()
    } else {
        send_file(file, span.clone(), Arc::clone(state))
    };
    let mut response = Response::new(body);
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, span.end.saturating_sub(span.start).into());
    headers.insert(ETAG, e_tag.parse().unwrap());
    headers.insert(
        LAST_MODIFIED,
        "Thu, 01 Jan 2026 00:00:00 GMT".parse().unwrap(),
    );
    headers.insert(ACCEPT_RANGES, "bytes".parse().unwrap());
    if range.is_some() {
        let header = format!("bytes {}-{}/{len}", span.start, span.end.saturating_sub(1));
        headers.insert(CONTENT_RANGE, header.parse().unwrap());
    }
    response
}

/// The body: `span` of `file`, read by a blocking task a chunk ahead of the
/// connection.
fn send_file(file: Arc<std::fs::File>, span: std::ops::Range<u64>, state: Arc<State>) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        let mut at = span.start;
        while at < span.end {
            let n = (span.end - at).min(CHUNK) as usize;
            let mut chunk = vec![0u8; n];
            let read = file.read_exact_at(&mut chunk, at).map(|()| {
                state
                    .faults
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                Frame::data(Bytes::from(chunk))
            });
            let failed = read.is_err();
            if sender.blocking_send(read).is_err() || failed {
                return;
            }
            at += n as u64;
        }
    });
    let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    StreamBody::new(frames).boxed()
}
