//! Health probes of the sidecars (SPEC §5.3) and OpenCode's event stream (§5.4).
//!
//! Every probe is a fresh connection bounded by [`PROBE_TIMEOUT`] for connect
//! and the whole response: OpenCode accepts TCP connections a few hundred
//! milliseconds before it serves them and never answers a request that
//! arrived in that window, so a probe without its own deadline can hang forever.
//! Waiting for readiness therefore hedges ([`Prober::hedged`]): a new probe
//! starts every [`HEDGE_INTERVAL`] whether or not earlier ones have answered,
//! and the first healthy answer wins.

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
/// Between the starts of two hedged probes (SPEC §5.3).
pub const HEDGE_INTERVAL: Duration = Duration::from_millis(100);
/// After a refused connection (nothing listens yet, so no request reached the
/// sidecar and nothing is logged) the next probe starts this soon.
const AFTER_REFUSED: Duration = Duration::from_millis(20);

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
        self.attempt(endpoint).await.0
    }

    /// Hedged probes until one finds `endpoint` up or `until` passes (SPEC
    /// §5.3): a new probe (a fresh connection, bounded like [`Prober::probe`])
    /// starts every [`HEDGE_INTERVAL`] while earlier ones may still be in
    /// flight, and sooner after a refused connection; the first healthy (or
    /// degraded-but-running) answer wins and the probes still in flight are
    /// dropped. A probe caught in OpenCode's accept-before-serve window thus
    /// delays readiness by at most one interval, not by its 1 s timeout.
    ///
    /// At `until`, the last `Down` seen (or "no answer" while every probe
    /// was still waiting). At least one probe is started, however late.
    pub async fn hedged(&self, endpoint: &Endpoint, until: tokio::time::Instant) -> Probe {
        self.hedged_noting(endpoint, until, &mut |_| {}).await
    }

    /// [`Prober::hedged`], telling `noted` each `Down` reason as it comes
    /// (for "still starting" reports while the probes go on).
    pub async fn hedged_noting(
        &self,
        endpoint: &Endpoint,
        until: tokio::time::Instant,
        noted: &mut (dyn FnMut(&str) + Send),
    ) -> Probe {
        use tokio::time::{sleep_until, Instant};
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        in_flight.push(self.attempt(endpoint));
        let mut next = Instant::now() + HEDGE_INTERVAL;
        let mut last_down: Option<String> = None;
        let deadline = sleep_until(until.max(Instant::now()));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                Some((probe, refused)) = in_flight.next(), if !in_flight.is_empty() => match probe {
                    Probe::Down { reason } => {
                        noted(&reason);
                        last_down = Some(reason);
                        if refused {
                            next = next.min(Instant::now() + AFTER_REFUSED);
                        }
                    }
                    up => return up,
                },
                _ = &mut deadline => {
                    return Probe::Down {
                        reason: last_down.unwrap_or_else(|| "no answer yet".into()),
                    }
                }
                _ = sleep_until(next) => {
                    in_flight.push(self.attempt(endpoint));
                    next = Instant::now() + HEDGE_INTERVAL;
                }
            }
        }
    }

    /// One probe, and whether its connection was refused (nothing listening).
    async fn attempt(&self, endpoint: &Endpoint) -> (Probe, bool) {
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
        let down = |reason: String| Probe::Down { reason };
        match tokio::time::timeout(PROBE_TIMEOUT + Duration::from_millis(100), attempt).await {
            Err(_) => (down("no answer within 1 s".into()), false),
            Ok(Err(e)) if e.is_timeout() => (down("no answer within 1 s".into()), false),
            Ok(Err(e)) if e.is_connect() => (down("connection refused".into()), true),
            Ok(Err(e)) => (down(crate::error_chain(&e)), false),
            Ok(Ok((status, body))) => (judge(endpoint, status, &body), false),
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

    /// A loopback server that accepts connections at once but, for its first
    /// `silent` after starting, never answers them (OpenCode's
    /// accept-before-serve window); then answers `GET /health` with `ok:true`.
    fn accept_before_serve(silent: Duration) -> (u16, std::time::Instant) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                if started.elapsed() < silent {
                    held.push(conn);
                    continue;
                }
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    let body = r#"{"ok":true,"version":"1"}"#;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        (port, started)
    }

    #[tokio::test]
    async fn a_probe_caught_before_serving_does_not_delay_readiness() {
        let silent = Duration::from_millis(400);
        let (port, started) = accept_before_serve(silent);
        let prober = Prober::new().unwrap();
        let endpoint = Endpoint::OpenWork {
            base: format!("http://127.0.0.1:{port}"),
        };
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let probe = prober.hedged(&endpoint, until).await;
        assert!(probe.is_up(), "{probe:?}");
        let late = started.elapsed().saturating_sub(silent);
        // One probe per 100 ms: the first one after the window answers. A
        // prober that waited out the held probe would be ready only after
        // its 1 s timeout (600 ms after serving); the margin above 100 ms is
        // for a loaded machine, where the suite runs beside everything else.
        assert!(
            late < Duration::from_millis(450),
            "ready {late:?} after serving"
        );
    }

    #[tokio::test]
    async fn nothing_listening_yet_is_retried_sooner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let prober = Prober::new().unwrap();
        let endpoint = Endpoint::OpenWork {
            base: format!("http://127.0.0.1:{port}"),
        };
        let serve_at = std::time::Instant::now() + Duration::from_millis(300);
        let server = std::thread::spawn(move || {
            std::thread::sleep(serve_at - std::time::Instant::now());
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let body = r#"{"ok":true}"#;
            let _ = std::io::Write::write_all(
                &mut conn,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            std::time::Instant::now()
        });
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let probe = prober.hedged(&endpoint, until).await;
        let ready = std::time::Instant::now();
        assert!(probe.is_up(), "{probe:?}");
        let _ = server.join().unwrap();
        assert!(
            ready.duration_since(serve_at) < Duration::from_millis(100),
            "ready {:?} after listening",
            ready.duration_since(serve_at)
        );
    }

    #[tokio::test]
    async fn hedged_probes_give_up_at_the_deadline_with_the_last_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let prober = Prober::new().unwrap();
        let started = tokio::time::Instant::now();
        let probe = prober
            .hedged(
                &Endpoint::OpenWork {
                    base: format!("http://127.0.0.1:{port}"),
                },
                started + Duration::from_millis(250),
            )
            .await;
        assert_eq!(
            probe,
            Probe::Down {
                reason: "connection refused".into()
            }
        );
        assert!(started.elapsed() < Duration::from_millis(400));
        // A silent server: every probe still waiting at the deadline.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let probe = prober
            .hedged(
                &Endpoint::OpenWork {
                    base: format!("http://127.0.0.1:{port}"),
                },
                tokio::time::Instant::now() + Duration::from_millis(300),
            )
            .await;
        assert!(!probe.is_up(), "{probe:?}");
        drop(silent);
    }
}
