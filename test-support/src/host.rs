//! A loopback HTTP server that answers like GitHub's releases API and its
//! download host, and doubles as a static mirror of a directory. Runs on its
//! own thread and runtime, so sync tests, async tests and the xtask demo can
//! all use it while they block on a child process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Switches a test flips to make the host misbehave. Counters count down per request.
#[derive(Default)]
pub struct Faults {
    /// The next N downloads answer 500.
    pub fail_downloads: AtomicU32,
    /// The next N downloads send half the body, then drop the connection.
    pub truncate_downloads: AtomicU32,
    /// The API answers 403 with `x-ratelimit-remaining: 0`.
    pub rate_limited: AtomicBool,
    /// The API reports a wrong `digest` for every asset.
    pub wrong_digest: AtomicBool,
    /// The API reports no `digest` (older releases).
    pub no_digest: AtomicBool,
    /// Downloads ignore `Range` and send no `Accept-Ranges`.
    pub no_range: AtomicBool,
    /// `GET /releases/latest` answers 404 (forces the list fallback).
    pub no_latest_endpoint: AtomicBool,
    /// Downloads serve every file's bytes with the last one flipped.
    pub corrupt_downloads: AtomicBool,
    /// Per-connection bandwidth cap in bytes/s for downloads (0 = unlimited).
    pub throttle_bytes_per_sec: AtomicU64,
    /// Downloads announce 1000 bytes more than they send.
    pub wrong_length: AtomicBool,
    /// Downloads send zeros forever, without a length.
    pub endless: AtomicBool,
    /// Downloads send one byte every this many milliseconds (0 = off).
    pub drip_ms: AtomicU64,
    /// Downloads answer `302` to this URL prefix + the path (another host, or a loop).
    pub redirect_to: Mutex<Option<String>>,
    /// The next N requests (API, downloads and mirror files) answer 429.
    pub too_many_requests: AtomicU32,
    /// With `too_many_requests`: the `Retry-After` value sent (none when unset).
    pub retry_after: Mutex<Option<String>>,
    /// With `too_many_requests`: `x-ratelimit-reset` this many seconds from now (0: none).
    pub ratelimit_reset_in: AtomicU64,
}

#[derive(Clone, Debug)]
pub struct FakeAsset {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug)]
pub struct FakeRelease {
    pub tag: String,
    pub prerelease: bool,
    pub draft: bool,
    pub assets: Vec<FakeAsset>,
}

impl FakeRelease {
    pub fn new(tag: &str, assets: Vec<FakeAsset>) -> Self {
        FakeRelease {
            tag: tag.to_string(),
            prerelease: false,
            draft: false,
            assets,
        }
    }
}

pub(crate) struct Stored {
    pub(crate) release: FakeRelease,
    /// asset name → (sha256 hex, size)
    pub(crate) digests: BTreeMap<String, (String, u64)>,
}

pub(crate) struct Shared {
    pub(crate) base: String,
    pub(crate) repos: Mutex<BTreeMap<String, Vec<Stored>>>,
    pub(crate) mirror_dir: Option<PathBuf>,
    pub(crate) faults: Faults,
    pub(crate) requests: AtomicU64,
    pub(crate) log: Mutex<Vec<String>>,
}

/// The running server. Dropping it stops it.
pub struct ReleaseHost {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// In HTTPS mode: the CA its certificate chains to.
    ca: Option<crate::tls::TestCa>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReleaseHost {
    /// A release host with no repositories yet (add them with [`ReleaseHost::add_release`]).
    pub fn start() -> ReleaseHost {
        Self::spawn(None, None)
    }

    /// A static mirror: every file in `dir` at `/<name>`.
    pub fn mirror(dir: &Path) -> ReleaseHost {
        Self::spawn(Some(dir.to_path_buf()), None)
    }

    /// [`ReleaseHost::start`] over HTTPS, with a certificate from a CA made for it.
    pub fn start_tls() -> ReleaseHost {
        Self::spawn(None, Some("127.0.0.1"))
    }

    /// [`ReleaseHost::mirror`] over HTTPS, with a certificate from a CA made for it.
    pub fn mirror_tls(dir: &Path) -> ReleaseHost {
        Self::spawn(Some(dir.to_path_buf()), Some("127.0.0.1"))
    }

    /// Like [`ReleaseHost::start_tls`], its URLs naming [`crate::tls::PROXIED_HOST`]:
    /// only a client going through [`crate::proxy::ForwardProxy`] reaches it.
    pub fn start_tls_proxied() -> ReleaseHost {
        Self::spawn(None, Some(crate::tls::PROXIED_HOST))
    }

    /// [`ReleaseHost::mirror_tls`] reachable only through the test proxy.
    pub fn mirror_tls_proxied(dir: &Path) -> ReleaseHost {
        Self::spawn(Some(dir.to_path_buf()), Some(crate::tls::PROXIED_HOST))
    }

    /// In HTTPS mode, the PEM of the CA the host's certificate chains to.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|ca| ca.ca_pem.as_str())
    }

    /// `tls_name`: serve HTTPS, naming the host so in URLs.
    fn spawn(mirror_dir: Option<PathBuf>, tls_name: Option<&str>) -> ReleaseHost {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = tls_name.map(|_| crate::tls::TestCa::generate());
        let base = match tls_name {
            Some(name) => format!("https://{name}:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let shared = Arc::new(Shared {
            base,
            repos: Mutex::default(),
            mirror_dir,
            faults: Faults::default(),
            requests: AtomicU64::new(0),
            log: Mutex::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        use crate::github_api::{latest_release, list_releases, release_by_tag};
        let app = Router::new()
            .route("/api/repos/{owner}/{repo}/releases", get(list_releases))
            .route(
                "/api/repos/{owner}/{repo}/releases/latest",
                get(latest_release),
            )
            .route(
                "/api/repos/{owner}/{repo}/releases/tags/{tag}",
                get(release_by_tag),
            )
            .route(
                "/{owner}/{repo}/releases/download/{tag}/{asset}",
                get(download_asset),
            )
            .fallback(get(mirror_file))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                count_requests,
            ))
            .with_state(shared.clone());
        let tls = ca.as_ref().map(|ca| ca.listener_factory());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let stop = async {
                    let _ = rx.await;
                };
                let _ = match tls {
                    Some(tls) => {
                        axum::serve(tls.listener(listener), app)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                    None => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                };
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        ReleaseHost {
            addr,
            shared,
            ca,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Publishes a release of `repo` (`owner/name`); digests are computed from the files.
    pub fn add_release(&self, repo: &str, release: FakeRelease) {
        let digests = release
            .assets
            .iter()
            .map(|a| (a.name.clone(), sha256_file(&a.path)))
            .collect();
        let mut repos = self.shared.repos.lock().unwrap();
        repos
            .entry(repo.to_string())
            .or_default()
            .push(Stored { release, digests });
    }

    /// `http(s)://127.0.0.1:<port>`: the download host (GitHub's `https://github.com`).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The API root (`OPENWRK_GITHUB_API_URL`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.shared.base)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Requests served so far (API, downloads and mirror files).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// `METHOD /path [Range] [auth]` of every request so far (`[auth]` when an
    /// Authorization header was sent; its value is never recorded).
    pub fn request_log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for ReleaseHost {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn sha256_file(path: &Path) -> (String, u64) {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = std::io::Read::read(&mut file, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    (hex::encode(hasher.finalize()), size)
}

async fn count_requests(
    State(shared): State<Arc<Shared>>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let auth = match req.headers().get(header::AUTHORIZATION) {
        Some(_) => " [auth]",
        None => "",
    };
    shared
        .log
        .lock()
        .unwrap()
        .push(format!("{} {}{range}{auth}", req.method(), req.uri()));
    if take(&shared.faults.too_many_requests) {
        return too_many_requests(&shared.faults);
    }
    next.run(req).await
}

/// A 429 with the `Retry-After` / `x-ratelimit-reset` the faults ask for.
fn too_many_requests(faults: &Faults) -> Response {
    let mut r = crate::github_api::api_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    let h = r.headers_mut();
    if let Some(v) = faults.retry_after.lock().unwrap().clone() {
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&v).unwrap());
    }
    let reset_in = faults.ratelimit_reset_in.load(Ordering::SeqCst);
    if reset_in > 0 {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + reset_in;
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
    }
    r
}

async fn download_asset(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, tag, asset)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{owner}/{repo}");
    let path = {
        let repos = shared.repos.lock().unwrap();
        repos
            .get(&key)
            .and_then(|rs| rs.iter().find(|s| s.release.tag == tag))
            .and_then(|s| s.release.assets.iter().find(|a| a.name == asset))
            .map(|a| a.path.clone())
    };
    match path {
        Some(p) => serve_file(&shared, &p, &headers).await,
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

async fn mirror_file(State(shared): State<Arc<Shared>>, req: Request<Body>) -> Response {
    let Some(dir) = &shared.mirror_dir else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let name = req.uri().path().trim_start_matches('/');
    if name.is_empty() || name.contains("..") || name.contains('/') {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let path = dir.join(name);
    if !path.is_file() {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    serve_file(&shared, &path, req.headers()).await
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Serves a file with `Range: bytes=N-` support and the download faults.
async fn serve_file(shared: &Shared, path: &Path, headers: &HeaderMap) -> Response {
    let faults = &shared.faults;
    if take(&faults.fail_downloads) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    if let Some(prefix) = faults.redirect_to.lock().unwrap().clone() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut r = StatusCode::FOUND.into_response();
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&format!("{prefix}/{name}")).unwrap(),
        );
        return r;
    }
    if faults.endless.load(Ordering::SeqCst) {
        let zeros = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 64 * 1024]))
        });
        return Response::new(Body::from_stream(zeros));
    }
    let drip = faults.drip_ms.load(Ordering::SeqCst);
    if drip > 0 {
        let bytes = std::fs::read(path).unwrap_or_default();
        let len = bytes.len();
        let stream = futures_util::stream::unfold((bytes, 0usize), move |(bytes, i)| async move {
            if i >= bytes.len() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(drip)).await;
            let b = Bytes::from(vec![bytes[i]]);
            Some((Ok::<_, std::io::Error>(b), (bytes, i + 1)))
        });
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return r;
    }
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let size = file.metadata().await.unwrap().len();
    let ranges = !faults.no_range.load(Ordering::SeqCst);
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<u64>()
                .ok()
        })
        .filter(|s| ranges && *s < size);
    let offset = start.unwrap_or(0);
    file.seek(std::io::SeekFrom::Start(offset)).await.unwrap();
    let len = size - offset;
    let truncate = take(&faults.truncate_downloads);
    let corrupt = faults.corrupt_downloads.load(Ordering::SeqCst);
    let send = if truncate { len / 2 } else { len };
    let wrong_length = faults.wrong_length.load(Ordering::SeqCst);
    let throttle = faults.throttle_bytes_per_sec.load(Ordering::SeqCst);

    let stream = futures_util::stream::unfold(
        (file, 0u64, tokio::time::Instant::now()),
        move |(mut file, sent, started)| async move {
            if sent >= send {
                if truncate || wrong_length {
                    // Let hyper flush the headers and the partial body before the cut.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let err = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected truncation",
                    );
                    return Some((Err(err), (file, u64::MAX, started)));
                }
                return None;
            }
            let mut buf = vec![0u8; (64 * 1024).min((send - sent) as usize)];
            let n = match file.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            buf.truncate(n);
            let pos = offset + sent + n as u64;
            if corrupt && pos == size {
                *buf.last_mut().unwrap() ^= 0xff;
            }
            if throttle > 0 {
                let due = Duration::from_secs_f64((sent + n as u64) as f64 / throttle as f64);
                tokio::time::sleep_until(started + due).await;
            }
            Some((Ok(Bytes::from(buf)), (file, sent + n as u64, started)))
        },
    );

    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let announced = if faults.wrong_length.load(Ordering::SeqCst) {
        len + 1000
    } else {
        len
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(announced));
    if ranges {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if let Some(start) = start {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {start}-{}/{size}", size - 1);
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}
