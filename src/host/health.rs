//! Health probes of the sidecars (SPEC §5.3) and OpenCode's event stream (§5.4).
//!
//! Every probe is a fresh connection bounded by [`PROBE_TIMEOUT`] for connect
//! and the whole response: OpenCode accepts TCP connections a few hundred
//! milliseconds before it serves them and never answers a request that
//! arrived in that window, so a probe without its own deadline can hang forever.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;

/// How probes introduce themselves (`User-Agent: openwrk-probe/<version>`),
/// so their request lines can be told from other clients' and kept out of
/// the unified log.
pub const PROBE_AGENT_PREFIX: &str = "openwrk-probe/";

/// Connect plus full response of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot build the HTTP client for health probes: {0}")]
    Client(String),
    #[error("no event from {url} within {secs} s{detail}\nhint: OpenCode is healthy but its event stream is not; check the opencode log lines above")]
    NoEvent {
        url: String,
        secs: u64,
        detail: String,
    },
}

/// A health endpoint and how to read its answer.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `GET /global/health` with basic auth → `{"healthy":true,"version"}`.
    OpenCode { base: String, authorization: String },
    /// `GET /health` → `{"ok":true,"version","uptimeMs"}`.
    OpenWork { base: String },
    /// `GET /health` → 200, or 503 / `ok:false` when running without a channel.
    Owpenbot { base: String },
}

impl Endpoint {
    pub fn url(&self) -> String {
        match self {
            Endpoint::OpenCode { base, .. } => format!("{base}/global/health"),
            Endpoint::OpenWork { base } | Endpoint::Owpenbot { base } => format!("{base}/health"),
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy {
        version: Option<String>,
    },
    /// Running, but reporting a problem that does not stop the run (owpenbot without a channel).
    Degraded {
        detail: String,
    },
    Down {
        reason: String,
    },
}

impl Probe {
    pub fn is_up(&self) -> bool {
        !matches!(self, Probe::Down { .. })
    }
}

#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
}

impl Prober {
    pub fn new() -> Result<Prober, HealthError> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            // Loopback probes must never go through HTTP(S)_PROXY.
            .no_proxy()
            // A pooled connection could be one OpenCode accepted before it served.
            .pool_max_idle_per_host(0)
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT)
            .user_agent(format!("{PROBE_AGENT_PREFIX}{}", crate::VERSION))
            .build()
            .map_err(|e| HealthError::Client(crate::error_chain(&e)))?;
        Ok(Prober { client })
    }

    /// One probe, never longer than [`PROBE_TIMEOUT`] (plus scheduling).
    pub async fn probe(&self, endpoint: &Endpoint) -> Probe {
        let mut request = self.client.get(endpoint.url());
        if let Endpoint::OpenCode { authorization, .. } = endpoint {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let attempt = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        match tokio::time::timeout(PROBE_TIMEOUT + Duration::from_millis(100), attempt).await {
            Err(_) => Probe::Down {
                reason: "no answer within 1 s".into(),
            },
            Ok(Err(e)) if e.is_timeout() => Probe::Down {
                reason: "no answer within 1 s".into(),
            },
            Ok(Err(e)) if e.is_connect() => Probe::Down {
                reason: "connection refused".into(),
            },
            Ok(Err(e)) => Probe::Down {
                reason: crate::error_chain(&e),
            },
            Ok(Ok((status, body))) => judge(endpoint, status, &body),
        }
    }
}

/// Reads a health answer per the sidecar's contract.
pub fn judge(endpoint: &Endpoint, status: u16, body: &[u8]) -> Probe {
    let json = serde_json::from_slice::<Value>(body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).cloned();
    let version = field("version").and_then(|v| v.as_str().map(str::to_string));
    let down = |reason: String| Probe::Down { reason };
    match endpoint {
        Endpoint::OpenCode { .. } => match (status, field("healthy")) {
            (200, Some(Value::Bool(true))) => Probe::Healthy { version },
            (401, _) => down("HTTP 401: basic auth rejected".into()),
            (200, _) => down("HTTP 200 without \"healthy\":true".into()),
            (s, _) => down(format!("HTTP {s}")),
        },
        Endpoint::OpenWork { .. } => match (status, field("ok")) {
            (200, Some(Value::Bool(true))) => Probe::Healthy { version },
            (200, _) => down("HTTP 200 without \"ok\":true".into()),
            (s, _) => down(format!("HTTP {s}")),
        },
        Endpoint::Owpenbot { .. } => match (status, field("ok")) {
            (200, Some(Value::Bool(true))) => Probe::Healthy { version },
            (200 | 503, Some(Value::Bool(false))) => Probe::Degraded {
                detail: owpenbot_detail(json.as_ref()),
            },
            (s, _) => down(format!("HTTP {s}")),
        },
    }
}

fn owpenbot_detail(json: Option<&Value>) -> String {
    let channels = json
        .and_then(|j| j.get("channels"))
        .and_then(Value::as_object);
    match channels {
        Some(c) if !c.values().any(|v| v == &Value::Bool(true)) => {
            "no chat channel configured".into()
        }
        _ => "reports ok:false".into(),
    }
}

/// Probe delays: 50 ms, growing by half each time, capped at 250 ms.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 3 / 2).min(MAX_BACKOFF);
        Some(d)
    }
}

/// Opens OpenCode's `GET /event` and returns the `type` of the first event.
pub async fn first_event(
    base: &str,
    authorization: &str,
    within: Duration,
) -> Result<String, HealthError> {
    let url = format!("{base}/event");
    let no_event = |detail: String| HealthError::NoEvent {
        url: url.clone(),
        secs: within.as_secs(),
        detail,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(PROBE_TIMEOUT)
        .user_agent(crate::user_agent())
        .build()
        .map_err(|e| HealthError::Client(crate::error_chain(&e)))?;
    let read = async {
        let response = client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| format!(": {}", crate::error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!(": HTTP {}", response.status().as_u16()));
        }
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = stream.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| format!(": {e}"))?);
            if let Some(kind) = first_data_type(&buffer) {
                return Ok(kind);
            }
        }
        Err(": the stream ended".to_string())
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(kind)) => Ok(kind),
        Ok(Err(detail)) => Err(no_event(detail)),
        Err(_) => Err(no_event(String::new())),
    }
}

/// The `type` of the first complete `data:` line in an SSE buffer.
fn first_data_type(buffer: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buffer);
    let complete = &text[..text.rfind('\n')? + 1];
    complete.lines().find_map(|line| {
        let data = line.strip_prefix("data:")?.trim();
        let v: Value = serde_json::from_str(data).ok()?;
        Some(
            v.get("type")
                .and_then(Value::as_str)
                .unwrap_or("(untyped)")
                .to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oc() -> Endpoint {
        Endpoint::OpenCode {
            base: "http://x".into(),
            authorization: "Basic x".into(),
        }
    }

    #[test]
    fn answers_are_judged_per_contract() {
        assert_eq!(
            judge(&oc(), 200, br#"{"healthy":true,"version":"1.2.3"}"#),
            Probe::Healthy {
                version: Some("1.2.3".into())
            }
        );
        assert!(!judge(&oc(), 401, b"Unauthorized").is_up());
        assert!(!judge(&oc(), 503, br#"{"healthy":false}"#).is_up());
        let ow = Endpoint::OpenWork {
            base: "http://x".into(),
        };
        assert!(judge(&ow, 200, br#"{"ok":true,"version":"1"}"#).is_up());
        assert!(!judge(&ow, 503, br#"{"ok":false}"#).is_up());
        let bot = Endpoint::Owpenbot {
            base: "http://x".into(),
        };
        assert_eq!(
            judge(
                &bot,
                503,
                br#"{"ok":false,"channels":{"telegram":false,"whatsapp":false}}"#
            ),
            Probe::Degraded {
                detail: "no chat channel configured".into()
            }
        );
        assert!(matches!(
            judge(&bot, 200, br#"{"ok":true}"#),
            Probe::Healthy { .. }
        ));
        assert!(!judge(&bot, 500, b"").is_up());
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        let d: Vec<u128> = Backoff::default().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(d, vec![50, 75, 112, 168, 250, 250, 250]);
    }

    #[test]
    fn sse_first_event_type() {
        assert_eq!(first_data_type(b"data: {\"type\":\"server.con"), None);
        assert_eq!(
            first_data_type(b": hi\n\ndata: {\"type\":\"server.connected\"}\n\n").as_deref(),
            Some("server.connected")
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_within_a_second() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let prober = Prober::new().unwrap();
        let start = std::time::Instant::now();
        let probe = prober
            .probe(&Endpoint::OpenWork {
                base: format!("http://127.0.0.1:{port}"),
            })
            .await;
        assert!(!probe.is_up());
        assert!(start.elapsed() < Duration::from_millis(1500));
        drop(listener);
    }
}
