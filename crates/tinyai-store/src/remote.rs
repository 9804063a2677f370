//! Models in object storage (feature `remote`): an S3-compatible bucket or a
//! plain HTTP(S) server, read with ranged GETs through the `object_store`
//! crate (Apache Arrow's client: signing, retries with backoff, timeouts),
//! never a hand-written HTTP client.
//!
//! A remote model is served by the owned backend: its header and tables come
//! from one or two ranged GETs at open, each layer from `concurrency` ranged
//! GETs of `part_size` bytes in flight at once, written straight into the
//! layer's buffer. The object's ETag and length are recorded at open and
//! every later GET carries `If-Match`: an object overwritten while the model
//! is open is [`StoreError::FileChanged`], never a mix of old and new bytes.
//!
//! The client is asynchronous; the store's threads are not. Each remote
//! object owns a small multi-thread tokio runtime that drives the requests'
//! I/O and timers, and a loading thread waits for its layer with
//! `Handle::block_on`. Dropping the object cancels what is in flight.
//!
//! A network has no kernel read-ahead: the store fetches the layers its
//! streaming window queues ahead of their loads
//! ([`RemoteObject::fetch_ahead`]), each as a task on the runtime that fills
//! the buffer its load adopts ([`RemoteObject::take_ahead`]), so several
//! layers' GETs are in flight however few threads wait on them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreScheme, RetryConfig,
};
use tokio_util::sync::CancellationToken;

use crate::buffer::{AlignedBuf, ReadTarget};
use crate::error::StoreError;
use crate::tier::DiskTier;

/// How a remote model is fetched. Credentials, region and endpoint come from
/// the standard `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
/// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint such as a local server);
/// [`RemoteConfig::options`] overrides them.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Ranged GETs in flight per layer (default 8).
    pub concurrency: usize,
    /// Bytes per ranged GET (default 8 MiB).
    pub part_size: u64,
    /// Time allowed for one request, body included (default 60 s).
    pub timeout: Duration,
    /// Time allowed to connect (default 5 s).
    pub connect_timeout: Duration,
    /// Retries of a transient failure (5xx, timeout, refused connection),
    /// with exponential backoff (default 5).
    pub max_retries: usize,
    /// No retry starts this long after a request's first attempt (default 30 s).
    pub retry_timeout: Duration,
    /// `object_store` configuration keys for S3 (`aws_endpoint`,
    /// `aws_allow_http`, `aws_access_key_id`, `aws_region`, …), applied over
    /// the environment.
    pub options: Vec<(String, String)>,
    /// A local disk tier: fetched layers are kept here (checksummed, written
    /// through `.partial` files renamed into place) and read back by later
    /// loads and later opens of the same object version (same ETag and
    /// length). `None` (default): no tier.
    pub cache_dir: Option<PathBuf>,
    /// The tier's size: beyond it, the least recently used layers of every
    /// object under `cache_dir` are removed (default 16 GiB).
    pub cache_max_bytes: u64,
    /// Verify each layer's CRC-32C when it is first fetched (default true;
    /// `StoreConfig::verify_checksums` turns it on for local files). A
    /// mismatch is [`StoreError::Format`] and the layer is not served.
    pub verify_checksums: bool,
}

impl Default for RemoteConfig {
    fn default() -> RemoteConfig {
        RemoteConfig {
            concurrency: 8,
            part_size: 8 << 20,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_retries: 5,
            retry_timeout: Duration::from_secs(30),
            options: Vec::new(),
            cache_dir: None,
            cache_max_bytes: 16 << 30,
            verify_checksums: true,
        }
    }
}

/// Bytes the open's first GET asks for: the header, and the tables of a
/// model this small (a `.tmai` keeps its tables after the layers, so a
/// larger one needs a second GET for them).
pub(crate) const FIRST_GET: u64 = 1 << 20;

/// One object, open.
pub(crate) struct RemoteObject {
    /// What fetches bytes: shared with the fetches started ahead of their loads.
    fetcher: Arc<Fetcher>,
    /// `Some` until drop, which shuts it down without waiting.
    runtime: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
    /// The local disk tier, if configured and usable.
    tier: Option<DiskTier>,
    /// Layers being fetched ahead of their loads, by offset: each fetch owns
    /// the buffer its layer's load adopts (see [`RemoteObject::fetch_ahead`]).
    ahead: Mutex<HashMap<u64, FetchAhead>>,
}

/// A layer fetched ahead: its task, which returns the buffer and how the
/// fetch went.
type FetchAhead = tokio::task::JoinHandle<(AlignedBuf, Result<(), StoreError>)>;

/// The object's client and identity: everything a GET needs.
struct Fetcher {
    url: String,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
    e_tag: Option<String>,
    concurrency: usize,
    part_size: u64,
    /// The object's first bytes, from the open's GET: reads inside them
    /// (the header and tables) need no request.
    first: Vec<u8>,
}

impl std::fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteObject")
            .field("url", &self.fetcher.url)
            .field("size", &self.fetcher.size)
            .field("e_tag", &self.fetcher.e_tag)
            .finish()
    }
}

impl Drop for RemoteObject {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Dropped by the last owner of the model: no load is waiting on
            // it. Fetches still running ahead end with it, their buffers freed.
            runtime.shutdown_background();
        }
    }
}

fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "yes" | "y"
    )
}

impl RemoteObject {
    /// Opens the object at `url` (`s3://bucket/key`, `http(s)://host/path`):
    /// one ranged GET of its first [`FIRST_GET`] bytes, which also gives its
    /// length and ETag; reads inside those bytes are then served from memory.
    pub(crate) fn open(url: &str, config: &RemoteConfig) -> Result<RemoteObject, StoreError> {
        if config.concurrency == 0 || config.part_size == 0 {
            return Err(StoreError::InvalidConfig(
                "remote concurrency and part size must be at least 1".into(),
            ));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StoreError::InvalidConfig(
                "a remote model cannot be opened or read from inside an async runtime \
                 (use spawn_blocking)"
                    .into(),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| remote_error(url, "parse the URL", e))?;
        let (scheme, path) =
            ObjectStoreScheme::parse(&parsed).map_err(|e| remote_error(url, "parse the URL", e))?;
        // The TLS provider of the HTTP client (ring); a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tinyai-remote")
            .enable_all()
            .build()
            .map_err(|e| remote_error(url, "start the HTTP runtime", e))?;
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
        };
        let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| is_true(&v));
        let client = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.connect_timeout);
        // Built inside the runtime: the client resolves names on it.
        let _entered = runtime.enter();
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_client_options(client.with_allow_http(allow_http))
                    .with_url(url)
                    .with_retry(retry);
                for (key, value) in &config.options {
                    let key: AmazonS3ConfigKey = key
                        .parse()
                        .map_err(|e| remote_error(url, "read the options", e))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(|e| remote_error(url, "configure S3", e))?,
                )
            }
            ObjectStoreScheme::Http => {
                let base = &parsed[..url::Position::BeforePath];
                Arc::new(
                    HttpBuilder::new()
                        .with_url(base)
                        .with_client_options(client.with_allow_http(parsed.scheme() == "http"))
                        .with_retry(retry)
                        .build()
                        .map_err(|e| remote_error(url, "configure HTTP", e))?,
                )
            }
            other => {
                return Err(StoreError::InvalidConfig(format!(
                    "{url}: unsupported object store {other:?} (s3:// and http(s):// are)"
                )));
            }
        };
        drop(_entered);
        let mut fetcher = Fetcher {
            url: url.to_owned(),
            store,
            path,
            size: 0,
            e_tag: None,
            concurrency: config.concurrency,
            part_size: config.part_size,
            first: Vec::new(),
        };
        let cancel = CancellationToken::new();
        let (size, e_tag, first) =
            block_on_in(&runtime, &cancel, &fetcher.url, fetcher.first_get())?;
        fetcher.size = size;
        fetcher.e_tag = e_tag;
        fetcher.first = first;
        let tier = config.cache_dir.as_deref().and_then(|root| {
            DiskTier::open(
                root,
                url,
                fetcher.e_tag.as_deref(),
                size,
                config.cache_max_bytes,
            )
        });
        tracing::info!(url, size, e_tag = ?fetcher.e_tag, "opened remote object");
        Ok(RemoteObject {
            fetcher: Arc::new(fetcher),
            runtime: Some(runtime),
            cancel,
            tier,
            ahead: Mutex::new(HashMap::new()),
        })
    }

    /// The object's URL, as a path for messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.fetcher.path()
    }

    /// The object's length at open.
    pub(crate) fn size(&self) -> u64 {
        self.fetcher.size
    }

    fn block_on<T>(
        &self,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| closed(&self.fetcher.url))?;
        block_on_in(runtime, &self.cancel, &self.fetcher.url, future)
    }

    /// Ends the requests in flight and refuses new ones (the model is closing).
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether a load of `offset..offset + len` would fetch it (the disk
    /// tier does not hold it, and no fetch of it is under way).
    pub(crate) fn would_fetch(&self, offset: u64, len: usize) -> bool {
        !self.cancel.is_cancelled()
            && !self.ahead_lock().contains_key(&offset)
            && self
                .tier
                .as_ref()
                .is_none_or(|tier| !tier.holds(offset, len))
    }

    /// Starts fetching layer bytes `offset..offset + len` into `buffer`, ahead
    /// of the layer's load, which adopts the buffer
    /// ([`RemoteObject::take_ahead`]); or that load's prefetch went stale and
    /// drops it ([`RemoteObject::discard_ahead`]). The caller has charged the
    /// layer: the buffer is its memory.
    pub(crate) fn fetch_ahead(
        &self,
        offset: u64,
        len: usize,
        mut buffer: AlignedBuf,
    ) -> Result<(), AlignedBuf> {
        let Some(runtime) = &self.runtime else {
            return Err(buffer);
        };
        let fetcher = Arc::clone(&self.fetcher);
        let cancel = self.cancel.clone();
        let task = runtime.spawn(async move {
            let target = buffer.read_target(len);
            let read = match cancel
                .run_until_cancelled(fetcher.read(offset, target))
                .await
            {
                Some(read) => read,
                None => Err(closed(&fetcher.url)),
            };
            (buffer, read)
        });
        tracing::trace!(offset, len, "remote fetch ahead");
        self.ahead_lock().insert(offset, task);
        Ok(())
    }

    /// The fetch started ahead for `offset`, once it is done: its buffer and
    /// how the fetch went; `None` when none was started; an error when the
    /// task ended without returning its buffer (the buffer went with it).
    #[allow(clippy::type_complexity)]
    pub(crate) fn take_ahead(
        &self,
        offset: u64,
    ) -> Option<Result<(AlignedBuf, Result<(), StoreError>), StoreError>> {
        let task = self.ahead_lock().remove(&offset)?;
        // Awaited whole, even once the model is closing: the task watches the
        // cancellation itself, and returns its buffer when it ends.
        Some(
            self.wait_for(task)
                .and_then(|joined| joined.map_err(|e| remote_error(&self.fetcher.url, "read", e))),
        )
    }

    /// Ends the fetch started ahead for `offset`, if any, and frees its
    /// buffer before returning.
    pub(crate) fn discard_ahead(&self, offset: u64) {
        let task = self.ahead_lock().remove(&offset);
        if let Some(task) = task {
            task.abort();
            // Cancelled or done, the task has dropped or returned its buffer.
            let _ = self.wait_for(task);
        }
    }

    /// Waits for a task of this object's runtime (not cut short by the
    /// cancellation: the task ends promptly by itself once cancelled).
    fn wait_for<T>(
        &self,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<Result<T, tokio::task::JoinError>, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| closed(&self.fetcher.url))?;
        refuse_inside_a_runtime()?;
        Ok(runtime.handle().block_on(task))
    }

    fn ahead_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, FetchAhead>> {
        self.ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads layer bytes `offset..offset + len` into `buffer`: from the disk
    /// tier if it holds them intact, else from the object (then kept in the tier).
    pub(crate) fn read_layer(
        &self,
        offset: u64,
        buffer: &mut AlignedBuf,
        len: usize,
    ) -> Result<(), StoreError> {
        if let Some(tier) = &self.tier
            && tier.load(offset, buffer, len)
        {
            return Ok(());
        }
        self.read(offset, buffer.read_target(len))?;
        self.keep(offset, buffer, len);
        Ok(())
    }

    /// Keeps fetched layer bytes in the disk tier, if there is one.
    pub(crate) fn keep(&self, offset: u64, buffer: &AlignedBuf, len: usize) {
        if let Some(tier) = &self.tier
            && let Some(bytes) = buffer.as_slice().get(..len)
        {
            tier.store(offset, bytes);
        }
    }

    /// Removes layer bytes from the disk tier (they failed their checksum:
    /// the next load fetches them again).
    pub(crate) fn forget(&self, offset: u64, len: usize) {
        if let Some(tier) = &self.tier {
            tier.remove(offset, len);
        }
    }

    /// Reads `target.len` bytes at `offset` into `target` (see [`Fetcher::read`]).
    pub(crate) fn read(&self, offset: u64, target: ReadTarget) -> Result<(), StoreError> {
        self.block_on(self.fetcher.read(offset, target))
    }
}

/// Waits on `runtime` for `future`, unless `cancel` ends it first (the model
/// closed); refused from inside an async runtime (it would block a worker).
fn block_on_in<T>(
    runtime: &tokio::runtime::Runtime,
    cancel: &CancellationToken,
    url: &str,
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    refuse_inside_a_runtime()?;
    runtime
        .handle()
        .block_on(cancel.run_until_cancelled(future))
        .unwrap_or_else(|| Err(closed(url)))
}

/// Waiting on the object's runtime from inside an async runtime would block
/// one of its workers (and tokio panics on it): an error instead.
fn refuse_inside_a_runtime() -> Result<(), StoreError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(StoreError::InvalidConfig(
            "a remote model cannot be read from inside an async runtime (use spawn_blocking)"
                .into(),
        ));
    }
    Ok(())
}

fn closed(url: &str) -> StoreError {
    remote_error(url, "read", "the model was closed")
}

impl Fetcher {
    fn path(&self) -> PathBuf {
        PathBuf::from(&self.url)
    }

    /// The first GET: (length, ETag, the first bytes).
    async fn first_get(&self) -> Result<(u64, Option<String>, Vec<u8>), StoreError> {
        let result = self.get(0..FIRST_GET, None, "open").await?;
        let meta = result.meta.clone();
        let bytes = result.bytes().await.map_err(|e| self.error("open", e))?;
        Ok((meta.size, meta.e_tag, bytes.to_vec()))
    }

    /// Reads `target.len` bytes at `offset` into `target`, in ranged GETs of
    /// `part_size` bytes, `concurrency` in flight; each GET must find the
    /// object as it was at open.
    async fn read(&self, offset: u64, target: ReadTarget) -> Result<(), StoreError> {
        let len = target.len as u64;
        if len == 0 {
            return Ok(());
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(StoreError::FileChanged {
                path: self.path(),
                opened: self.size,
                now: self.size,
            });
        }
        if let Some(bytes) = usize::try_from(offset)
            .ok()
            .and_then(|start| self.first.get(start..start + target.len))
        {
            target.copy_from(bytes);
            return Ok(());
        }
        let parts = crate::io::chunks(offset, len, self.part_size);
        futures_util::stream::iter(parts)
            .map(|(at, n)| self.read_part(at, target.piece((at - offset) as usize, n as usize)))
            .buffer_unordered(self.concurrency)
            .try_for_each(|()| std::future::ready(Ok(())))
            .await
    }

    async fn read_part(&self, at: u64, target: ReadTarget) -> Result<(), StoreError> {
        let want = target.len as u64;
        let result = self.get(at..at + want, self.e_tag.clone(), "read").await?;
        // A server that ignores If-Match still says what it served.
        if result.meta.size != self.size
            || (self.e_tag.is_some()
                && result.meta.e_tag.is_some()
                && result.meta.e_tag != self.e_tag)
        {
            return Err(StoreError::FileChanged {
                path: self.path(),
                opened: self.size,
                now: result.meta.size,
            });
        }
        let mut stream = result.into_stream();
        let mut filled = 0u64;
        while let Some(bytes) = stream.next().await {
            let bytes = bytes.map_err(|e| self.error("read", e))?;
            let n = bytes.len() as u64;
            if filled + n > want {
                return Err(remote_error(
                    &self.url,
                    "read",
                    format!("the server sent more than the {want} bytes asked for at {at}"),
                ));
            }
            target.piece(filled as usize, bytes.len()).copy_from(&bytes);
            filled += n;
        }
        if filled != want {
            return Err(StoreError::FileChanged {
                path: self.path(),
                opened: self.size,
                now: at + filled,
            });
        }
        Ok(())
    }

    /// One ranged GET (with `If-Match` when `if_match` is set).
    async fn get(
        &self,
        range: std::ops::Range<u64>,
        if_match: Option<String>,
        action: &'static str,
    ) -> Result<object_store::GetResult, StoreError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match,
            ..GetOptions::default()
        };
        self.store
            .get_opts(&self.path, options)
            .await
            .map_err(|e| self.error(action, e))
    }

    /// A typed error for a failed request: a missing object or bucket is
    /// `NotFound`, refused credentials `PermissionDenied` (both as
    /// [`StoreError::Io`], like a local file), a changed object
    /// [`StoreError::FileChanged`], anything else [`StoreError::Remote`].
    fn error(&self, action: &'static str, error: object_store::Error) -> StoreError {
        use std::io::ErrorKind;
        let kind = match &error {
            object_store::Error::NotFound { .. } => Some(ErrorKind::NotFound),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Some(ErrorKind::PermissionDenied),
            object_store::Error::Precondition { .. } => {
                return StoreError::FileChanged {
                    path: self.path(),
                    opened: self.size,
                    now: self.size,
                };
            }
            _ => None,
        };
        match kind {
            Some(kind) => StoreError::Io {
                path: self.path(),
                action,
                source: std::io::Error::new(kind, error),
            },
            None => remote_error(&self.url, action, error),
        }
    }
}

fn remote_error(
    url: &str,
    action: &'static str,
    error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Remote {
        url: url.to_owned(),
        action,
        source: error.into(),
    }
}
