//! `openwrk approvals list` and `approvals reply ID --allow|--deny` (SPEC §4, §7):
//! the pending approvals of an OpenWork server, with its host token
//! (`X-OpenWork-Host-Token`).

use std::time::Duration;

use serde_json::Value;

use super::Failure;
use crate::cli::{ApprovalsCommand, Global, RemoteArgs};
use crate::host::remote::{base_url, client};

/// Connect plus full answer of one request to a remote server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(global: &Global, command: ApprovalsCommand) -> Result<i32, Failure> {
    match command {
        ApprovalsCommand::List(remote) => list(global, &Remote::from_args(&remote)?).await,
        ApprovalsCommand::Reply {
            id,
            allow,
            deny: _,
            remote,
        } => reply(global, &Remote::from_args(&remote)?, &id, allow).await,
    }
}

struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    fn from_args(args: &RemoteArgs) -> Result<Remote, Failure> {
        let url = args.openwork_url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| Failure {
            message: "no OpenWork server given\nhint: pass --openwork-url URL or set OPENWRK_OPENWORK_URL (the OpenWork URL `openwrk serve` prints)".into(),
            code: 2,
        })?;
        let base = base_url(url, "--openwork-url")?;
        let token = args.host_token.clone().filter(|t| !t.trim().is_empty()).ok_or_else(|| Failure {
            message: "no host token given\nhint: set OPENWRK_HOST_TOKEN (or pass --host-token) to the host token `openwrk serve` prints".into(),
            code: 2,
        })?;
        let client = client(&base, REQUEST_TIMEOUT).map_err(|e| Failure {
            message: format!("cannot build the HTTP client: {e}"),
            code: 1,
        })?;
        Ok(Remote {
            base,
            token: token.trim().to_string(),
            client,
        })
    }

    /// One request; transport failures and 401 become errors, other statuses are returned.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .header("X-OpenWork-Host-Token", &self.token);
        if let Some(b) = body {
            // reqwest is built without its json feature; this is all it would do.
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let response = request.send().await.map_err(|e| Failure {
            message: format!(
                "cannot reach the OpenWork server at {}: {}\nhint: check the URL and that the server runs (`openwrk status --openwork-url {}`)",
                self.base,
                crate::error_chain(&e),
                self.base
            ),
            code: 1,
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 401 {
            return Err(Failure {
                message: format!(
                    "the OpenWork server at {} refused the host token: {method} {path} answered HTTP 401{}\nhint: use the host token `openwrk serve` printed (OPENWRK_HOST_TOKEN), not the client token",
                    self.base,
                    detail(&json)
                ),
                code: 1,
            });
        }
        Ok((status, json))
    }

    fn unexpected(&self, what: &str, status: u16, json: &Value) -> Failure {
        Failure {
            message: format!(
                "{what} failed: the OpenWork server at {} answered HTTP {status}{}\nhint: `openwrk status --openwork-url {}` checks the server; its log says more",
                self.base,
                detail(json),
                self.base
            ),
            code: 1,
        }
    }
}

/// `: <message>` from an error body `{"code","message"}`, or its text.
fn detail(json: &Value) -> String {
    match json {
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(|m| format!(": {m}"))
            .unwrap_or_default(),
        Value::String(s) if !s.trim().is_empty() => {
            format!(": {}", s.trim().chars().take(200).collect::<String>())
        }
        _ => String::new(),
    }
}

async fn list(global: &Global, remote: &Remote) -> Result<i32, Failure> {
    let (status, json) = remote
        .call(reqwest::Method::GET, "/approvals", None)
        .await?;
    if status != 200 {
        return Err(remote.unexpected("listing approvals", status, &json));
    }
    let Some(items) = json.get("items").and_then(Value::as_array) else {
        return Err(Failure {
            message: format!(
                "the OpenWork server at {} answered GET /approvals without an \"items\" list\nhint: check that --openwork-url points at an OpenWork server",
                remote.base
            ),
            code: 1,
        });
    };
    if global.json {
        println!("{}", serde_json::json!({ "items": items }));
        return Ok(0);
    }
    if items.is_empty() {
        println!("no pending approvals on {}", remote.base);
        return Ok(0);
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let rows: Vec<[String; 5]> = items
        .iter()
        .map(|a| {
            let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
            let paths = a
                .get("paths")
                .and_then(Value::as_array)
                .map(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            [
                s("id"),
                s("action"),
                s("summary"),
                paths,
                age(a.get("createdAt"), now_ms),
            ]
        })
        .collect();
    print!(
        "{}",
        super::workspace::table(&["ID", "ACTION", "SUMMARY", "PATHS", "AGE"], &rows)
    );
    Ok(0)
}

/// `12s`, `5m`, `2h` since a millisecond timestamp; other values as they are.
fn age(created: Option<&Value>, now_ms: i64) -> String {
    match created {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => {
                let secs = (now_ms - ms).max(0) / 1000;
                match secs {
                    0..=59 => format!("{secs}s"),
                    60..=3599 => format!("{}m", secs / 60),
                    _ => format!("{}h", secs / 3600),
                }
            }
            None => n.to_string(),
        },
        Some(Value::String(s)) => s.clone(),
        _ => "-".into(),
    }
}

async fn reply(global: &Global, remote: &Remote, id: &str, allow: bool) -> Result<i32, Failure> {
    let word = if allow { "allow" } else { "deny" };
    let path = format!("/approvals/{}", encode_segment(id));
    let (status, json) = remote
        .call(
            reqwest::Method::POST,
            &path,
            Some(serde_json::json!({ "reply": word })),
        )
        .await?;
    match status {
        200..=299 => {
            if global.json {
                println!("{json}");
            } else {
                let done = if allow { "allowed" } else { "denied" };
                println!("{done} {id}");
            }
            Ok(0)
        }
        404 => Err(Failure {
            message: format!(
                "no pending approval {id} on {} (HTTP 404{})\nhint: `openwrk approvals list` shows the pending ones; an approval that timed out is gone",
                remote.base,
                detail(&json)
            ),
            code: 1,
        }),
        s => Err(remote.unexpected(&format!("replying {word} to {id}"), s, &json)),
    }
}

/// A path segment: every byte but RFC 3986 unreserved ones percent-encoded.
fn encode_segment(s: &str) -> String {
    crate::host::daemon::encode_query_value(s).replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_durations() {
        let now = 10_000_000;
        assert_eq!(age(Some(&Value::from(now - 5_000)), now), "5s");
        assert_eq!(age(Some(&Value::from(now - 600_000)), now), "10m");
        assert_eq!(age(Some(&Value::from("2024-01-01")), now), "2024-01-01");
        assert_eq!(age(None, now), "-");
    }

    #[test]
    fn urls_are_checked_and_ids_encoded() {
        assert_eq!(
            base_url("http://127.0.0.1:8787/", "--x").unwrap(),
            "http://127.0.0.1:8787"
        );
        assert_eq!(
            base_url("127.0.0.1:8787", "--x").unwrap_err().exit_code(),
            2
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            detail(&serde_json::json!({"code":"x","message":"no such"})),
            ": no such"
        );
    }
}
