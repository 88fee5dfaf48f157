//! The router daemon's HTTP side (SPEC §6): the API over the workspace list,
//! and a reverse proxy `ANY /w/{id}/{rest}` → OpenCode `/{rest}?directory=<path>`
//! with OpenCode's basic auth filled in. Bodies stream both ways, so OpenCode's
//! event stream (SSE) passes through. The process side (keeping one OpenCode
//! alive) is in `keeper` and `foreground`; they share [`Shared`].
//!

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::TryStreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::files::{DaemonError, LastExit};
use crate::host::log::Logger;
use crate::host::workspaces::{Stamp, Store, Workspace, WorkspaceError};

/// OpenCode as the keeper last saw it; the router reads it per request.
#[derive(Debug, Clone, Default)]
pub struct OpenCodeState {
    pub pid: Option<u32>,
    /// Start times of OpenCode and its guardian (`crate::host::process`).
    pub process_start: Option<u64>,
    pub guardian: Option<(u32, Option<u64>)>,
    pub port: Option<u16>,
    pub url: Option<String>,
    pub version: Option<String>,
    /// The last health probe passed.
    pub healthy: bool,
    /// Healthy at least once since it was started and not exited since: only
    /// then are requests forwarded (OpenCode accepts connections before it
    /// serves them, and a request in that window would hang).
    pub serving: bool,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
}

/// The workspace list as of its last change; re-read when the file's
/// identity (mtime, size, inode) changes, which is cheap per request.
struct Cached {
    stamp: Option<Stamp>,
    result: Result<Vec<Workspace>, String>,
}

pub struct Shared {
    pub token: String,
    /// `Authorization` value for OpenCode.
    pub opencode_auth: String,
    pub opencode: RwLock<OpenCodeState>,
    pub store: Store,
    cached: Mutex<Option<Cached>>,
    client: reqwest::Client,
    pub logger: Logger,
}

impl Shared {
    pub fn new(
        token: String,
        opencode_auth: String,
        store: Store,
        logger: Logger,
    ) -> Result<Shared, DaemonError> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            // OpenCode is on loopback; HTTP(S)_PROXY must not apply.
            .no_proxy()
            .connect_timeout(crate::host::health::PROBE_TIMEOUT)
            // A proxy passes redirects to its client rather than following them.
            .redirect(reqwest::redirect::Policy::none())
            // No overall timeout: event streams and long prompts stay open for minutes.
            .build()
            .map_err(|e| DaemonError::Client(crate::error_chain(&e)))?;
        Ok(Shared {
            token,
            opencode_auth,
            opencode: RwLock::new(OpenCodeState::default()),
            store,
            cached: Mutex::new(None),
            client,
            logger,
        })
    }

    pub fn opencode(&self) -> OpenCodeState {
        self.opencode
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_opencode(&self, f: impl FnOnce(&mut OpenCodeState)) {
        f(&mut self.opencode.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// The current workspace list (re-read if the file changed).
    fn workspaces(&self) -> Result<Vec<Workspace>, String> {
        let stamp = self.store.stamp().map_err(|e| e.to_string())?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.stamp == stamp && stamp.is_some())
        {
            return c.result.clone();
        }
        let result = self.store.load().map_err(|e| e.to_string());
        *cached = Some(Cached {
            stamp,
            result: result.clone(),
        });
        result
    }

    fn workspace(&self, id: &str) -> Result<Workspace, ApiError> {
        let list = self.workspaces().map_err(|message| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "state_error",
            message,
        })?;
        list.into_iter().find(|w| w.id == id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "workspace_not_found",
                &format!("unknown workspace id {id}; GET /workspaces lists them"),
            )
        })
    }

    /// OpenCode's base URL when it serves requests, else a 503 to return.
    fn upstream(&self) -> Result<String, ApiError> {
        let oc = self.opencode();
        match (oc.serving, oc.url) {
            (true, Some(url)) => Ok(url),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "opencode_unavailable",
                &format!(
                    "OpenCode is not serving right now (restarts so far: {}); try again shortly",
                    oc.restarts
                ),
            )),
        }
    }
}

/// `{"code","message"}` with a status, like the OpenWork server's errors.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: &str) -> ApiError {
        ApiError {
            status,
            code,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn state_error(message: String) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "state_error", &message)
}

fn workspace_error(e: WorkspaceError) -> Response {
    let (status, code) = match &e {
        WorkspaceError::NotADirectory { .. } => (StatusCode::BAD_REQUEST, "not_a_directory"),
        WorkspaceError::UnknownId { .. } => (StatusCode::NOT_FOUND, "workspace_not_found"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "state_error"),
    };
    error(status, code, &e.to_string())
}

/// The daemon's routes.
pub fn app(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/workspaces", get(list).post(add))
        .route("/workspaces/{id}", axum::routing::delete(remove))
        .route("/workspaces/{id}/dispose", post(dispose))
        .route("/w/{id}", any(proxy))
        .route("/w/{id}/", any(proxy))
        .route("/w/{id}/{*rest}", any(proxy))
        .route_layer(middleware::from_fn_with_state(shared.clone(), bearer));
    Router::new()
        .route("/health", get(health))
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(shared)
}

/// `Authorization: Bearer <daemon token>`, compared in constant time.
async fn bearer(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), s.token.as_bytes()) => next.run(req).await,
        _ => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid daemon token: send Authorization: Bearer <the token in daemon.token of the data dir>",
        ),
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let oc = s.opencode();
    Json(json!({
        "ok": true,
        "version": crate::VERSION,
        "opencode": {
            "pid": oc.pid,
            "url": oc.url,
            "healthy": oc.healthy,
            "restarts": oc.restarts,
            "version": oc.version,
            "lastExit": oc.last_exit,
        },
    }))
}

async fn list(State(s): State<Arc<Shared>>) -> Response {
    match s.workspaces() {
        Ok(workspaces) => Json(json!({ "workspaces": workspaces })).into_response(),
        Err(e) => state_error(e),
    }
}

#[derive(Deserialize)]
struct AddBody {
    path: PathBuf,
}

async fn add(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(AddBody { path }) = serde_json::from_slice::<AddBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be {\"path\":\"<absolute directory>\"}",
        );
    };
    // The daemon's working directory means nothing to the caller.
    if !path.is_absolute() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("path {} is not absolute", path.display()),
        );
    }
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.add(&path)).await {
        Ok(Ok((w, true))) => (StatusCode::CREATED, Json(w)).into_response(),
        Ok(Ok((w, false))) => (StatusCode::OK, Json(w)).into_response(),
        Ok(Err(e)) => workspace_error(e),
        Err(e) => state_error(e.to_string()),
    }
}

async fn remove(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.remove(&id)).await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => workspace_error(e),
        Err(e) => state_error(e.to_string()),
    }
}

/// OpenCode's `POST /instance/dispose?directory=<path>`, its answer relayed.
async fn dispose(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let (workspace, base) = match s.workspace(&id).and_then(|w| Ok((w, s.upstream()?))) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let url = format!(
        "{base}/instance/dispose?directory={}",
        encode_query_value(&workspace.path.to_string_lossy())
    );
    let answer = s
        .client
        .post(&url)
        .header(header::AUTHORIZATION, &s.opencode_auth)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await;
    match answer {
        Ok(r) => {
            s.logger.info(&format!(
                "disposed OpenCode's instance of {id} ({}): HTTP {}",
                workspace.path.display(),
                r.status().as_u16()
            ));
            relay(r)
        }
        Err(e) => unreachable_upstream(&e),
    }
}

fn unreachable_upstream(e: &reqwest::Error) -> Response {
    error(
        StatusCode::BAD_GATEWAY,
        "opencode_unreachable",
        &format!("OpenCode did not answer: {}", crate::error_chain(e)),
    )
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1);
/// never forwarded by a proxy.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// An upstream response as ours, its body streamed as it arrives.
fn relay(upstream: reqwest::Response) -> Response {
    let mut response = Response::builder().status(upstream.status().as_u16());
    if let Some(headers) = response.headers_mut() {
        for (k, v) in upstream.headers() {
            if !hop_by_hop(k) {
                headers.append(k.clone(), v.clone());
            }
        }
    }
    let body = Body::from_stream(upstream.bytes_stream());
    response
        .body(body)
        .unwrap_or_else(|e| state_error(e.to_string()))
}

/// `ANY /w/{id}/{rest}` → OpenCode `/{rest}` with `directory=<path>`.
async fn proxy(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let started = Instant::now();
    // The raw (still percent-encoded) path, so `rest` reaches OpenCode unchanged.
    let raw = req.uri().path().strip_prefix("/w/").unwrap_or_default();
    let (id, rest) = raw.split_once('/').unwrap_or((raw, ""));
    let (id, rest) = (id.to_string(), rest.to_string());
    let (workspace, base) = match s.workspace(&id).and_then(|w| Ok((w, s.upstream()?))) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let url = format!(
        "{base}/{rest}?{}",
        with_directory(req.uri().query(), &workspace.path.to_string_lossy())
    );
    let method = req.method().clone();
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        // The daemon's bearer token stays here; OpenCode gets its basic auth.
        let ours = matches!(
            k.as_str(),
            "host" | "authorization" | "x-opencode-directory"
        );
        if !ours && !hop_by_hop(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&s.opencode_auth) {
        headers.insert(header::AUTHORIZATION, v);
    }
    let has_body = has_body(req.headers(), &method);
    let mut upstream = s.client.request(method.clone(), &url).headers(headers);
    if has_body {
        let stream = req
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        upstream = upstream.body(reqwest::Body::wrap_stream(stream));
    }
    let answer = upstream.send().await;
    let log_line = |status: String| {
        s.logger.debug(&format!(
            "{method} /w/{id}/{rest} -> {status} ({} ms)",
            started.elapsed().as_millis()
        ))
    };
    match answer {
        Ok(r) => {
            log_line(r.status().as_u16().to_string());
            relay(r)
        }
        Err(e) => {
            log_line(format!("error: {}", crate::error_chain(&e)));
            unreachable_upstream(&e)
        }
    }
}

/// Whether a request carries a body to forward: a length above zero or a
/// chunked transfer. A GET without one must not turn into a chunked request.
fn has_body(headers: &HeaderMap, method: &Method) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING) && method != Method::HEAD,
    }
}

/// The client's query without its own `directory`, plus the workspace's.
/// Keys are compared decoded (`dir%65ctory` is `directory` to OpenCode), so a
/// client cannot smuggle in another workspace.
fn with_directory(query: Option<&str>, directory: &str) -> String {
    let mut parts: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !names_directory(p.split('=').next().unwrap_or_default()))
        .collect();
    let ours = format!("directory={}", encode_query_value(directory));
    parts.push(&ours);
    parts.join("&")
}

/// Whether a raw query key decodes to `directory` (any case, `+` as space,
/// surrounding spaces ignored): erring towards stripping is safe.
fn names_directory(raw_key: &str) -> bool {
    let plus_as_space = raw_key.replace('+', " ");
    let bytes = plus_as_space.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded)
        .trim()
        .eq_ignore_ascii_case("directory")
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`, so
/// any decoder (with or without `+` as space) reads the path back exactly.
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Serves `app` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // No Nagle: a relayed answer goes out as headers, then body chunks, and a
    // held-back chunk waiting for the client's delayed ACK costs up to 40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_directory_replaces_the_clients() {
        assert_eq!(
            with_directory(Some("a=1&directory=/etc&b=x%20y"), "/home/me/my proj+1"),
            "a=1&b=x%20y&directory=/home/me/my%20proj%2B1"
        );
        assert_eq!(with_directory(None, "/w"), "directory=/w");
        // Encoded spellings of the key are the same key to OpenCode.
        assert_eq!(
            with_directory(
                Some("dir%65ctory=/etc&%64irectory=/x&Directory=/y&directory+=/z&directory"),
                "/w"
            ),
            "directory=/w"
        );
        assert_eq!(
            with_directory(Some("directoryx=1&dir=2"), "/w"),
            "directoryx=1&dir=2&directory=/w"
        );
        assert_eq!(encode_query_value("/a/ä&b"), "/a/%C3%A4%26b");
    }

    #[test]
    fn bodies_are_forwarded_only_when_present() {
        let mut h = HeaderMap::new();
        assert!(!has_body(&h, &Method::GET));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!has_body(&h, &Method::POST));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(has_body(&h, &Method::POST));
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(has_body(&chunked, &Method::POST));
    }

    #[test]
    fn tokens_compare_by_content() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
