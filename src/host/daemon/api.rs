//! The router daemon's HTTP side (SPEC §6): the API over the workspace list
//! and the routes of the reverse proxy (`proxy`). The process side (keeping
//! one OpenCode alive) is in `keeper` and `foreground`; they share [`Shared`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::files::{DaemonError, LastExit};
use super::proxy::{self, encode_query_value, relay, unreachable_upstream};
use crate::host::log::Logger;
use crate::host::workspaces::{Stamp, Store, Workspace, WorkspaceError, WorkspaceList};

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
    result: Result<WorkspaceList, String>,
}

pub struct Shared {
    pub token: String,
    /// `Authorization` value for OpenCode.
    pub opencode_auth: String,
    pub opencode: RwLock<OpenCodeState>,
    pub store: Store,
    cached: Mutex<Option<Cached>>,
    pub(super) client: reqwest::Client,
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
    fn workspace_list(&self) -> Result<WorkspaceList, String> {
        let stamp = self.store.stamp().map_err(|e| e.to_string())?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.stamp == stamp && stamp.is_some())
        {
            return c.result.clone();
        }
        let result = self.store.load_list().map_err(|e| e.to_string());
        *cached = Some(Cached {
            stamp,
            result: result.clone(),
        });
        result
    }

    fn listed(&self) -> Result<WorkspaceList, ApiError> {
        self.workspace_list().map_err(|message| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "state_error",
            message,
        })
    }

    pub(super) fn workspace(&self, id: &str) -> Result<Workspace, ApiError> {
        let list = self.listed()?;
        list.workspaces
            .into_iter()
            .find(|w| w.id == id)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "workspace_not_found",
                    &format!("unknown workspace id {id}; GET /workspaces lists them"),
                )
            })
    }

    /// The workspace a request that names none goes to.
    pub(super) fn active_workspace(&self) -> Result<Workspace, ApiError> {
        crate::host::workspaces::active_of(&self.listed()?).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_active_workspace",
                "no active workspace: name one with /w/{id}/… or choose one with `openwrk workspace switch ID` (POST /workspaces/{id}/activate)",
            )
        })
    }

    /// OpenCode's base URL when it serves requests, else a 503 that says
    /// whether it is starting or which restart is under way.
    pub(super) fn upstream(&self) -> Result<String, ApiError> {
        let oc = self.opencode();
        match (oc.serving, oc.url) {
            (true, Some(url)) => Ok(url),
            _ if oc.restarts == 0 => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "opencode_unavailable",
                "OpenCode is starting; try again shortly",
            )),
            _ => {
                let after = oc
                    .last_exit
                    .as_ref()
                    .map(|e| format!(" after it exited ({})", e.status))
                    .unwrap_or_default();
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "opencode_unavailable",
                    &format!(
                        "OpenCode is restarting{after} (restart {}); try again shortly",
                        oc.restarts
                    ),
                ))
            }
        }
    }
}

/// `{"code","message"}` with a status, like the OpenWork server's errors.
pub(super) struct ApiError {
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

pub(super) fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

pub(super) fn state_error(message: String) -> Response {
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
        .route("/workspaces/{id}/activate", post(activate))
        .route("/w/{id}", any(proxy::by_id))
        .route("/w/{id}/", any(proxy::by_id))
        .route("/w/{id}/{*rest}", any(proxy::by_id))
        // A request that names no workspace goes to the active one.
        .fallback(proxy::active)
        .layer(middleware::from_fn_with_state(shared.clone(), bearer));
    Router::new()
        .route("/health", get(health))
        .merge(guarded)
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
    match s.workspace_list() {
        // `activeId` only when one is set, as in workspaces.json.
        Ok(l) => Json(l).into_response(),
        Err(e) => state_error(e),
    }
}

/// `POST /workspaces/{id}/activate`: what `openwrk workspace switch` does.
async fn activate(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.switch(&id)).await {
        Ok(Ok(w)) => Json(json!({ "activeId": w.id, "workspace": w })).into_response(),
        Ok(Err(e)) => workspace_error(e),
        Err(e) => state_error(e.to_string()),
    }
}

#[derive(Deserialize)]
struct AddBody {
    path: PathBuf,
    /// A display name, as upstream's `workspace add --name`.
    #[serde(default)]
    name: Option<String>,
}

async fn add(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(AddBody { path, name }) = serde_json::from_slice::<AddBody>(&body) else {
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
    match tokio::task::spawn_blocking(move || store.add_named(&path, name.as_deref())).await {
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
    fn tokens_compare_by_content() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
