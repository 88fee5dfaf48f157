//! The stand-in sidecars speak the HTTP contracts of SPEC §7 and honour `STANDIN_MODE`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const OPENCODE: &str = env!("CARGO_BIN_EXE_standin-opencode");
const OPENWORK: &str = env!("CARGO_BIN_EXE_standin-openwork-server");
const OWPENBOT: &str = env!("CARGO_BIN_EXE_standin-owpenbot");

/// A child that is killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    #[cfg(unix)]
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `limit` for the child to exit.
    async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("STANDIN_") || k.starts_with("OPENCODE_") || k.starts_with("OPENWORK_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd
}

fn spawn(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    Proc(command(bin, args, envs).spawn().unwrap())
}

fn opencode(port: u16, envs: &[(&str, &str)]) -> Proc {
    let port = port.to_string();
    let args = [
        "serve",
        "--hostname",
        "127.0.0.1",
        "--port",
        &port,
        "--print-logs",
    ];
    spawn(OPENCODE, &args, envs)
}

fn openwork(port: u16, envs: &[(&str, &str)]) -> Proc {
    let port = port.to_string();
    let args = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--approval",
        "manual",
        "--approval-timeout",
        "30000",
        "--opencode-base-url",
        "http://127.0.0.1:1",
        "--opencode-directory",
        "/tmp/ws",
        "--workspace",
        "/tmp/ws",
        "--read-only",
        "--some-future-flag",
    ];
    spawn(OPENWORK, &args, envs)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Polls `url` until it answers (any status) and returns that status.
async fn wait_answer(url: &str, auth: Option<(&str, &str)>) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(15);
    let client = client();
    loop {
        let mut req = client.get(url).timeout(Duration::from_millis(500));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Ok(res) = req.send().await {
            return res.status().as_u16();
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_json(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[cfg(unix)]
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test]
async fn opencode_contract() {
    let port = free_port();
    let _oc = opencode(port, &[("OPENCODE_SERVER_PASSWORD", "pw")]);
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let auth = Some(("opencode", "pw"));
    assert_eq!(
        wait_answer(&format!("{base}/global/health"), auth).await,
        200
    );

    let (status, body) = get_json(
        c.get(format!("{base}/global/health"))
            .basic_auth("opencode", Some("pw")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"healthy": true, "version": "0.0.0-standin"}));

    let missing = c.get(format!("{base}/global/health")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = c
        .get(format!("{base}/global/health"))
        .basic_auth("opencode", Some("nope"));
    assert_eq!(wrong.send().await.unwrap().status(), 401);

    let dispose = c
        .post(format!("{base}/instance/dispose?directory=%2Ftmp%2Fa%20b"))
        .basic_auth("opencode", Some("pw"));
    assert_eq!(get_json(dispose).await, (200, json!(true)));
    let with_header = c
        .get(format!("{base}/global/health"))
        .header("x-opencode-directory", "/tmp/b")
        .basic_auth("opencode", Some("pw"));
    assert_eq!(with_header.send().await.unwrap().status(), 200);
    let again = c
        .get(format!("{base}/global/health?directory=/tmp/b"))
        .basic_auth("opencode", Some("pw"));
    assert_eq!(again.send().await.unwrap().status(), 200);
    let (status, dirs) = get_json(c.get(format!("{base}/_standin/directories"))).await;
    assert_eq!(status, 200);
    assert_eq!(dirs, json!(["/tmp/a b", "/tmp/b"]));

    let mut events = c
        .get(format!("{base}/event"))
        .basic_auth("opencode", Some("pw"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = events.chunk().await.unwrap().expect("stream ended early");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        seen.starts_with("data: {\"type\":\"server.connected\",\"properties\":{}}\n\n"),
        "{seen:?}"
    );
    // The stream stays open: the next chunk is a heartbeat comment.
    let chunk = events.chunk().await.unwrap().expect("stream ended");
    assert!(std::str::from_utf8(&chunk).unwrap().starts_with(':'));
}

#[tokio::test]
async fn opencode_without_password_needs_no_auth() {
    let port = free_port();
    let _oc = opencode(port, &[("STANDIN_VERSION", "1.2.3")]);
    let url = format!("http://127.0.0.1:{port}/global/health");
    assert_eq!(wait_answer(&url, None).await, 200);
    let (_, body) = get_json(client().get(&url)).await;
    assert_eq!(body["version"], "1.2.3");
}

#[test]
fn opencode_version() {
    let out = command(OPENCODE, &["--version"], &[("STANDIN_VERSION", "9.8.7")])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "9.8.7");
}

#[tokio::test]
async fn openwork_server_contract() {
    let port = free_port();
    let envs = [
        ("OPENWORK_TOKEN", "client-tok"),
        ("OPENWORK_HOST_TOKEN", "host-tok"),
    ];
    let _ow = openwork(port, &envs);
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    assert_eq!(wait_answer(&format!("{base}/health"), None).await, 200);

    let (status, health) = get_json(c.get(format!("{base}/health"))).await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], true);
    assert_eq!(health["version"], "0.0.0-standin");
    assert!(health["uptimeMs"].is_u64());

    let unauthorized = json!("unauthorized");
    let (status, body) = get_json(c.get(format!("{base}/workspaces"))).await;
    assert_eq!((status, &body["code"]), (401, &unauthorized));
    let (status, body) =
        get_json(c.get(format!("{base}/workspaces")).bearer_auth("host-tok")).await;
    assert_eq!((status, &body["code"]), (401, &unauthorized));
    let (status, body) = get_json(
        c.get(format!("{base}/workspaces"))
            .bearer_auth("client-tok"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"workspaces": [{"id": "ws_standin", "path": "/tmp/ws"}]})
    );

    let approvals = || {
        c.get(format!("{base}/approvals"))
            .header("X-OpenWork-Host-Token", "host-tok")
    };
    let (status, body) = get_json(c.get(format!("{base}/approvals"))).await;
    assert_eq!((status, &body["code"]), (401, &unauthorized));
    let wrong = c
        .get(format!("{base}/approvals"))
        .header("X-OpenWork-Host-Token", "client-tok");
    assert_eq!(get_json(wrong).await.0, 401);
    let (status, body) = get_json(approvals()).await;
    assert_eq!(status, 200);
    let items = body["items"].as_array().unwrap();
    let ids: Vec<_> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ap_1", "ap_2"]);
    for key in [
        "id",
        "workspaceId",
        "action",
        "summary",
        "paths",
        "createdAt",
    ] {
        assert!(items[0].get(key).is_some(), "missing {key}");
    }

    let reply = |id: &str, reply: &str, token: &str| {
        c.post(format!("{base}/approvals/{id}"))
            .header("X-OpenWork-Host-Token", token)
            .json(&json!({ "reply": reply }))
    };
    assert_eq!(get_json(reply("ap_1", "allow", "bad")).await.0, 401);
    let ok = get_json(reply("ap_1", "allow", "host-tok")).await;
    assert_eq!(ok, (200, json!({"ok": true, "allowed": true})));
    let ok = get_json(reply("ap_2", "deny", "host-tok")).await;
    assert_eq!(ok, (200, json!({"ok": true, "allowed": false})));
    let (status, body) = get_json(reply("ap_1", "allow", "host-tok")).await;
    assert_eq!((status, &body["code"]), (404, &json!("approval_not_found")));
    assert!(body["message"].is_string());
    assert_eq!(get_json(approvals()).await.1, json!({"items": []}));
}

#[tokio::test]
async fn openwork_server_seeds_approvals_from_env() {
    let port = free_port();
    let items = r#"[{"id":"x1","workspaceId":"ws_standin","action":"bash","summary":"ls","paths":[],"createdAt":1}]"#;
    let envs = [
        ("OPENWORK_TOKEN", "a"),
        ("OPENWORK_HOST_TOKEN", "b"),
        ("STANDIN_APPROVALS", items),
    ];
    let _ow = openwork(port, &envs);
    let base = format!("http://127.0.0.1:{port}");
    wait_answer(&format!("{base}/health"), None).await;
    let req = client()
        .get(format!("{base}/approvals"))
        .header("X-OpenWork-Host-Token", "b");
    let (_, body) = get_json(req).await;
    assert_eq!(body["items"], serde_json::from_str::<Value>(items).unwrap());
}

#[tokio::test]
async fn owpenbot_health_reflects_opencode_and_channels() {
    let oc_port = free_port();
    let _oc = opencode(oc_port, &[("OPENCODE_SERVER_PASSWORD", "pw")]);
    let oc_url = format!("http://127.0.0.1:{oc_port}");
    wait_answer(&format!("{oc_url}/global/health"), Some(("opencode", "pw"))).await;

    for (channels, status, ok) in [("", 503, false), ("telegram", 200, true)] {
        let port = free_port();
        let data = std::env::temp_dir().join(format!("standin-owpenbot-{port}/owpenbot"));
        let port_s = port.to_string();
        let envs = [
            ("OPENCODE_SERVER_PASSWORD", "pw"),
            ("OPENCODE_DIRECTORY", "/tmp/ws"),
            ("OWPENBOT_HEALTH_PORT", port_s.as_str()),
            ("OWPENBOT_DATA_DIR", data.to_str().unwrap()),
            ("STANDIN_CHANNELS", channels),
        ];
        let _bot = spawn(
            OWPENBOT,
            &["start", "/tmp/ws", "--opencode-url", &oc_url],
            &envs,
        );
        let url = format!("http://127.0.0.1:{port}/health");
        wait_answer(&url, None).await;
        // The first OpenCode probe happens right after start; allow a few polls.
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = loop {
            let (s, body) = get_json(client().get(&url)).await;
            assert_eq!(s, status);
            if body["opencode"]["healthy"] == true || Instant::now() > deadline {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            body,
            json!({
                "ok": ok,
                "opencode": {"url": oc_url, "healthy": true, "version": "0.0.0-standin"},
                "channels": {"telegram": ok, "whatsapp": false},
            })
        );
        assert!(data.is_dir());
        let _ = std::fs::remove_dir_all(data.parent().unwrap());
    }
}

#[tokio::test]
async fn exit_mode_exits_before_listening() {
    for bin in [OPENCODE, OPENWORK, OWPENBOT] {
        let port = free_port().to_string();
        let args: &[&str] = match bin {
            OPENCODE => &["serve", "--port", &port],
            OPENWORK => &["--port", &port],
            _ => &["start", "/tmp", "--opencode-url", "http://127.0.0.1:1"],
        };
        let out = command(
            bin,
            args,
            &[("STANDIN_MODE", "exit:3"), ("OWPENBOT_HEALTH_PORT", &port)],
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(3), "{bin}");
        assert!(!out.stderr.is_empty(), "{bin} printed nothing to stderr");
    }
}

#[tokio::test]
async fn never_healthy_answers_503() {
    let port = free_port();
    let _ow = openwork(port, &[("STANDIN_MODE", "never-healthy")]);
    let url = format!("http://127.0.0.1:{port}/health");
    assert_eq!(wait_answer(&url, None).await, 503);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wait_answer(&url, None).await, 503);
}

#[tokio::test]
async fn hang_accepts_but_never_answers() {
    let port = free_port();
    let _oc = opencode(port, &[("STANDIN_MODE", "hang")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sock = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "never listened: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sock.write_all(b"GET /global/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    let err = sock.read(&mut buf).expect_err("hang mode answered");
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
}

#[tokio::test]
async fn crash_after_exits_1_once_healthy() {
    let port = free_port();
    let mut oc = opencode(port, &[("STANDIN_MODE", "crash-after:1s")]);
    let url = format!("http://127.0.0.1:{port}/global/health");
    assert_eq!(wait_answer(&url, None).await, 200);
    let status = oc
        .exit_within(Duration::from_secs(5))
        .await
        .expect("did not crash");
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn slow_start_delays_listening() {
    let port = free_port();
    let started = Instant::now();
    let _ow = openwork(port, &[("STANDIN_MODE", "slow-start:800ms")]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listened early"
    );
    assert_eq!(
        wait_answer(&format!("http://127.0.0.1:{port}/health"), None).await,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn port_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut oc = opencode(port, &[]);
    let status = oc
        .exit_within(Duration::from_secs(10))
        .await
        .expect("still running");
    assert_eq!(status.code(), Some(1));
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_exits_0_promptly() {
    let oc_port = free_port();
    let ow_port = free_port();
    let bot_port = free_port();
    let bot_port_s = bot_port.to_string();
    let oc = opencode(oc_port, &[]);
    let ow = openwork(ow_port, &[]);
    let bot = spawn(
        OWPENBOT,
        &[
            "start",
            "/tmp",
            "--opencode-url",
            &format!("http://127.0.0.1:{oc_port}"),
        ],
        &[("OWPENBOT_HEALTH_PORT", &bot_port_s)],
    );
    let mut procs = [
        (oc, format!("http://127.0.0.1:{oc_port}/global/health")),
        (ow, format!("http://127.0.0.1:{ow_port}/health")),
        (bot, format!("http://127.0.0.1:{bot_port}/health")),
    ];
    for (proc, url) in &mut procs {
        wait_answer(url, None).await;
        signal(proc.pid(), "-TERM");
        let status = proc.exit_within(Duration::from_secs(3)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{url}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn ignore_sigterm_needs_sigkill() {
    let port = free_port();
    let mut oc = opencode(port, &[("STANDIN_IGNORE_SIGTERM", "1")]);
    wait_answer(&format!("http://127.0.0.1:{port}/global/health"), None).await;
    signal(oc.pid(), "-TERM");
    assert!(oc.exit_within(Duration::from_millis(700)).await.is_none());
    oc.0.kill().unwrap();
    let status = oc
        .exit_within(Duration::from_secs(3))
        .await
        .expect("SIGKILL");
    assert_eq!(status.code(), None);
}
