//! Stand-in for `opencode serve` (SPEC §7): basic auth, `/global/health`,
//! `/event` (SSE), `/instance/dispose` and the directories it was asked about.
//! What it was started with (arguments, working directory, the settings
//! openwrk passes in the environment) is at `GET /_standin/launch` and, when
//! `STANDIN_LAUNCH_FILE` names a file, written there as JSON at start.

#[path = "../standin.rs"]
mod standin;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use standin::{Args, Mode};

const NAME: &str = "standin-opencode";
const HEARTBEAT: Duration = Duration::from_secs(3);

struct App {
    username: String,
    /// No password: no auth required (like OpenCode).
    password: Option<String>,
    version: String,
    mode: Mode,
    directories: Mutex<Vec<String>>,
    log: Log,
}

/// OpenCode-style logfmt lines on stderr (only with `--print-logs`).
#[derive(Clone, Copy)]
struct Log {
    info: bool,
    pid: u32,
}

impl Log {
    fn info(&self, message: &str, fields: &[(&str, String)]) {
        if !self.info {
            return;
        }
        let mut line = format!(
            "timestamp={} level=INFO run={} message={:?}",
            standin::iso_now(),
            self.pid,
            message
        );
        for (k, v) in fields {
            if v.is_empty() || v.contains([' ', '"', '=']) {
                line.push_str(&format!(" {k}={v:?}"));
            } else {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        eprintln!("{line}");
    }
}

#[tokio::main]
async fn main() {
    standin::grandchild_entry();
    let args = Args::from_env(&["hostname", "port", "log-level", "cors"]);
    if args.has("version") || args.has("v") {
        println!("{}", standin::version());
        return;
    }
    if args.positional.first().map(String::as_str) != Some("serve") {
        eprintln!("{NAME}: only `serve` and `--version` are supported");
        std::process::exit(1);
    }
    let level = args
        .value("log-level")
        .unwrap_or("INFO")
        .to_ascii_uppercase();
    let app = Arc::new(App {
        username: std::env::var("OPENCODE_SERVER_USERNAME")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "opencode".to_owned()),
        password: std::env::var("OPENCODE_SERVER_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
        version: standin::version(),
        mode: Mode::from_env(),
        directories: Mutex::new(Vec::new()),
        log: Log {
            info: args.has("print-logs") && matches!(level.as_str(), "DEBUG" | "INFO"),
            pid: std::process::id(),
        },
    });
    let host = args.value("hostname").unwrap_or("127.0.0.1").to_owned();
    let port = args.port("port", 4096);
    let cors = args.values("cors").join(",");

    let launch = launch_report();
    if let Some(path) = std::env::var_os("STANDIN_LAUNCH_FILE").filter(|p| !p.is_empty()) {
        if let Err(e) = std::fs::write(&path, launch.to_string()) {
            eprintln!("{NAME}: cannot write STANDIN_LAUNCH_FILE: {e}");
        }
    }
    let router = Router::new()
        .route("/_standin/launch", get(move || async move { Json(launch) }))
        .route("/global/health", get(health))
        .route("/event", get(event))
        .route("/instance/dispose", post(dispose))
        .route("/_standin/directories", get(directories))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth_and_directory,
        ))
        .with_state(app.clone());
    let log = app.log;
    let router = standin::with_request_log(router, move |method, path, status, ms| {
        log.info(
            "request",
            &[
                ("service", "server".to_owned()),
                ("method", method.to_string()),
                ("path", path.to_owned()),
                ("status", status.to_string()),
                ("duration", format!("{ms}ms")),
            ],
        );
    });

    let code = standin::serve(NAME, app.mode, &host, port, router, |addr| {
        let url = format!("http://{addr}");
        println!(
            "opencode server listening on {url} (standin pid {})",
            std::process::id()
        );
        let mut fields = vec![("url", url)];
        if !cors.is_empty() {
            fields.push(("cors", cors));
        }
        log.info("server listening", &fields);
    })
    .await;
    std::process::exit(code);
}

/// Arguments, working directory and the settings openwrk hands over in the
/// environment (never the password).
fn launch_report() -> serde_json::Value {
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("OPENCODE_HOT_RELOAD") || k == "OPENWRK_RUN_ID")
        .map(|(k, v)| (k, v.into()))
        .collect();
    serde_json::json!({
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
        "cwd": std::env::current_dir().ok(),
        "env": env,
    })
}

/// Basic auth on everything but `/_standin/*`, then records the directory.
async fn auth_and_directory(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_standin/") {
        return next.run(req).await;
    }
    if let Some(pass) = &app.password {
        if !standin::basic_auth_ok(req.headers(), &app.username, pass) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"opencode\"")],
                "Unauthorized",
            )
                .into_response();
        }
    }
    let from_query = Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(q)| q.get("directory").cloned());
    let from_header = || {
        req.headers()
            .get("x-opencode-directory")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
    };
    if let Some(dir) = from_query.or_else(from_header).filter(|d| !d.is_empty()) {
        let mut seen = app.directories.lock().unwrap();
        if !seen.contains(&dir) {
            seen.push(dir);
        }
    }
    next.run(req).await
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let healthy = app.mode.healthy();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "healthy": healthy, "version": app.version });
    (status, Json(body)).into_response()
}

async fn event() -> Response {
    let first = futures_util::stream::once(async {
        Ok::<_, Infallible>(Bytes::from_static(
            b"data: {\"type\":\"server.connected\",\"properties\":{}}\n\n",
        ))
    });
    let heartbeats = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(HEARTBEAT).await;
        Some((Ok(Bytes::from_static(b": heartbeat\n\n")), ()))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(first.chain(heartbeats)),
    )
        .into_response()
}

async fn dispose() -> Json<bool> {
    Json(true)
}

async fn directories(State(app): State<Arc<App>>) -> Json<Vec<String>> {
    Json(app.directories.lock().unwrap().clone())
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "not found" })),
    )
        .into_response()
}

/// Decodes `%XX` escapes (the header form may be URI-encoded); invalid input is kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}
