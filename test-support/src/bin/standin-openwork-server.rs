//! Stand-in for the OpenWork server (SPEC §7): `/health`, `/workspaces` with the
//! client token, `/approvals` with the host token.

#[path = "../standin.rs"]
mod standin;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use standin::{json_error, Args, Mode};

const NAME: &str = "standin-openwork-server";

struct App {
    /// Unset tokens reject every request that needs them.
    token: Option<String>,
    host_token: Option<String>,
    workspace: String,
    version: String,
    mode: Mode,
    started: Instant,
    approvals: Mutex<Vec<Value>>,
}

#[tokio::main]
async fn main() {
    standin::grandchild_entry();
    let args = Args::from_env(&[
        "host",
        "port",
        "approval",
        "approval-timeout",
        "opencode-base-url",
        "opencode-directory",
        "workspace",
        "cors",
    ]);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let workspace = args
        .value("workspace")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        });
    let approvals = match env("STANDIN_APPROVALS") {
        Some(raw) => match serde_json::from_str::<Vec<Value>>(&raw) {
            Ok(items) => items,
            Err(e) => {
                eprintln!("{NAME}: error: STANDIN_APPROVALS is not a JSON array: {e}");
                std::process::exit(1);
            }
        },
        None => default_approvals(&workspace),
    };
    let app = Arc::new(App {
        token: env("OPENWORK_TOKEN"),
        host_token: env("OPENWORK_HOST_TOKEN"),
        workspace,
        version: standin::version(),
        mode: Mode::from_env(),
        started: Instant::now(),
        approvals: Mutex::new(approvals),
    });
    let host = args.value("host").unwrap_or("127.0.0.1").to_owned();
    let port = args.port("port", 8787);
    let log_requests = env("OPENWORK_LOG_REQUESTS").as_deref() != Some("0");

    let mut router = Router::new()
        .route("/health", get(health))
        .route("/workspaces", get(workspaces))
        .route("/approvals", get(list_approvals))
        .route("/approvals/{id}", post(reply_approval))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(app.clone());
    if log_requests {
        router = standin::with_request_log(router, |method, path, status, ms| {
            println!("{method} {path} {status} {ms}ms");
        });
    }

    let summary = format!(
        "workspace={} approval={} read-only={} opencode={} client-token={} host-token={}",
        app.workspace,
        args.value("approval").unwrap_or("manual"),
        args.has("read-only"),
        args.value("opencode-base-url").unwrap_or("-"),
        if app.token.is_some() { "set" } else { "unset" },
        if app.host_token.is_some() {
            "set"
        } else {
            "unset"
        },
    );
    let code = standin::serve(NAME, app.mode, &host, port, router, |addr| {
        println!(
            "openwork-server (standin {}) listening on http://{addr} pid={} {summary}",
            app.version,
            std::process::id()
        );
    })
    .await;
    std::process::exit(code);
}

fn default_approvals(workspace: &str) -> Vec<Value> {
    let now = standin::now_ms();
    let sep = if workspace.ends_with('/') { "" } else { "/" };
    vec![
        json!({
            "id": "ap_1",
            "workspaceId": "ws_standin",
            "action": "file.write",
            "summary": "Write README.md",
            "paths": [format!("{workspace}{sep}README.md")],
            "createdAt": now,
        }),
        json!({
            "id": "ap_2",
            "workspaceId": "ws_standin",
            "action": "file.delete",
            "summary": "Delete notes.txt",
            "paths": [format!("{workspace}{sep}notes.txt")],
            "createdAt": now,
        }),
    ]
}

fn unauthorized() -> Response {
    json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid token",
    )
}

fn bearer_ok(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    matches!((given, expected), (Some(g), Some(e)) if g.trim() == e)
}

fn host_token_ok(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let given = headers
        .get("x-openwork-host-token")
        .and_then(|v| v.to_str().ok());
    matches!((given, expected), (Some(g), Some(e)) if g.trim() == e)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let ok = app.mode.healthy();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ok": ok,
        "version": app.version,
        "uptimeMs": app.started.elapsed().as_millis() as u64,
    });
    (status, Json(body)).into_response()
}

async fn workspaces(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !bearer_ok(&headers, app.token.as_deref()) {
        return unauthorized();
    }
    Json(json!({ "workspaces": [{ "id": "ws_standin", "path": app.workspace }] })).into_response()
}

async fn list_approvals(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !host_token_ok(&headers, app.host_token.as_deref()) {
        return unauthorized();
    }
    let items = app.approvals.lock().unwrap().clone();
    Json(json!({ "items": items })).into_response()
}

async fn reply_approval(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !host_token_ok(&headers, app.host_token.as_deref()) {
        return unauthorized();
    }
    let reply = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("reply").and_then(Value::as_str).map(str::to_owned));
    let allowed = match reply.as_deref() {
        Some("allow") => true,
        Some("deny") => false,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "body must be {\"reply\":\"allow\"|\"deny\"}",
            )
        }
    };
    let mut items = app.approvals.lock().unwrap();
    let Some(pos) = items
        .iter()
        .position(|a| a.get("id").and_then(Value::as_str) == Some(id.as_str()))
    else {
        return json_error(
            StatusCode::NOT_FOUND,
            "approval_not_found",
            &format!("no pending approval {id}"),
        );
    };
    items.remove(pos);
    Json(json!({ "ok": true, "allowed": allowed })).into_response()
}
