//! Stand-in for `owpenbot start` (SPEC §7): `/health` on 127.0.0.1 at
//! `OWPENBOT_HEALTH_PORT`, filled by polling OpenCode's `/global/health`.

#[path = "../standin.rs"]
mod standin;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use standin::{Args, Mode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const NAME: &str = "standin-owpenbot";

struct App {
    opencode_url: String,
    mode: Mode,
    telegram: bool,
    whatsapp: bool,
    /// Last probe of OpenCode: healthy, version.
    opencode: Mutex<(bool, Option<String>)>,
}

/// pino-style JSON line on stdout (fields in pino's order).
fn log(level: u8, msg: &str) {
    println!(
        "{{\"level\":{level},\"time\":{},\"pid\":{},\"name\":\"owpenbot\",\"msg\":{}}}",
        standin::now_ms(),
        std::process::id(),
        Value::from(msg)
    );
}

#[tokio::main]
async fn main() {
    standin::grandchild_entry();
    let args = Args::from_env(&["opencode-url"]);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if args.positional.first().map(String::as_str) != Some("start") {
        eprintln!("{NAME}: only `start <dir> --opencode-url URL` is supported");
        std::process::exit(1);
    }
    let dir = args
        .positional
        .get(1)
        .cloned()
        .or_else(|| env("OPENCODE_DIRECTORY"))
        .unwrap_or_else(|| ".".to_owned());
    let opencode_url = args
        .value("opencode-url")
        .unwrap_or("http://127.0.0.1:4096")
        .trim_end_matches('/')
        .to_owned();
    let channels = env("STANDIN_CHANNELS").unwrap_or_default();
    let has = |c: &str| channels.split(',').any(|x| x.trim() == c);
    let app = Arc::new(App {
        opencode_url,
        mode: Mode::from_env(),
        telegram: has("telegram"),
        whatsapp: has("whatsapp"),
        opencode: Mutex::new((false, None)),
    });
    let port = standin::parse_port(
        env("OWPENBOT_HEALTH_PORT").as_deref(),
        "OWPENBOT_HEALTH_PORT",
        3005,
    );
    if let Some(data) = env("OWPENBOT_DATA_DIR") {
        if let Err(e) = std::fs::create_dir_all(&data) {
            log(40, &format!("cannot create data dir {data}: {e}"));
        }
    }
    let auth = env("OPENCODE_SERVER_PASSWORD").map(|pass| {
        let user = env("OPENCODE_SERVER_USERNAME").unwrap_or_else(|| "opencode".to_owned());
        standin::basic_auth_value(&user, &pass)
    });

    if !matches!(app.mode, Mode::Exit(_)) {
        tokio::spawn(poll_opencode(app.clone(), auth));
    }
    let router = Router::new()
        .route("/health", get(health))
        .with_state(app.clone());
    let code = standin::serve(NAME, app.mode, "127.0.0.1", port, router, |addr| {
        log(
            30,
            &format!(
                "owpenbot (standin) health server listening on http://{addr} pid={} workspace={dir} opencode={}",
                std::process::id(),
                app.opencode_url
            ),
        );
        if !app.telegram && !app.whatsapp {
            log(40, "no channel configured (telegram, whatsapp)");
        }
    })
    .await;
    std::process::exit(code);
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let (healthy, version) = app.opencode.lock().unwrap().clone();
    let ok = app.mode.healthy() && (app.telegram || app.whatsapp);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ok": ok,
        "opencode": { "url": app.opencode_url, "healthy": healthy, "version": version },
        "channels": { "telegram": app.telegram, "whatsapp": app.whatsapp },
    });
    (status, Json(body)).into_response()
}

/// Probes OpenCode every second and logs health changes.
async fn poll_opencode(app: Arc<App>, auth: Option<String>) {
    let mut last = None;
    loop {
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            get_health(&app.opencode_url, auth.as_deref()),
        )
        .await;
        let (healthy, version) = match probe {
            Ok(Ok(v)) => (
                v.get("healthy") == Some(&Value::Bool(true)),
                v.get("version").and_then(Value::as_str).map(str::to_owned),
            ),
            _ => (false, None),
        };
        if last != Some(healthy) {
            let (level, msg) = if healthy {
                (30, "opencode is healthy")
            } else {
                (40, "opencode is not reachable or unhealthy")
            };
            log(level, &format!("{msg}: {}", app.opencode_url));
            last = Some(healthy);
        }
        *app.opencode.lock().unwrap() = (healthy, version);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `GET <url>/global/health` over a fresh HTTP/1.1 connection; the JSON body of a 200.
async fn get_health(url: &str, auth: Option<&str>) -> std::io::Result<Value> {
    let err = |m: &str| std::io::Error::other(m.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err("only http:// URLs"))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let target = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_owned()
    };
    let mut stream = TcpStream::connect(target).await?;
    let prefix = prefix.trim_end_matches('/');
    let path = if prefix.is_empty() {
        "/global/health".to_owned()
    } else {
        format!("/{prefix}/global/health")
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some(auth) = auth {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("bad response"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(err("status is not 200"));
    }
    // Tolerate a chunked body: take the outermost JSON object.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => body,
    };
    serde_json::from_str(json).map_err(|e| err(&e.to_string()))
}
