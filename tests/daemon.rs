//! The router daemon and the workspace commands (SPEC §6), driven through the
//! real `openwrk` binary with the stand-in OpenCode of test-support (and the
//! real OpenCode when `OPENWRK_TEST_OPENCODE_BIN` is set). Every test has its
//! own temp dir; a process whose working directory or command line is inside
//! it belongs to that test, which is how "nothing left behind" is checked.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use openwrk_test_support::{processes_matching, processes_under, standin};
use serde_json::Value;

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("openwrk-daemon-")
            .tempdir()
            .unwrap();
        Env { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// A new directory to serve as a workspace.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    /// `openwrk …` with this test's data dir and a hermetic environment.
    fn openwrk(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        for (k, _) in std::env::vars() {
            let ours = ["OPENWRK_", "STANDIN_", "OPENCODE_", "OPENWORK_"];
            if ours.iter().any(|p| k.starts_with(p)) || k == "NO_COLOR" {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--data-dir")
            .arg(self.data())
            .args(["--color", "never"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.openwrk(args).output().unwrap()
    }

    /// `daemon start` with the given OpenCode; returns its URL and token.
    fn start_daemon(&self, opencode: &Path) -> (String, String) {
        let out = self.run(&[
            "daemon",
            "start",
            "--opencode-bin",
            opencode.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", show(&out));
        let url = String::from_utf8(out.stdout.clone()).unwrap();
        let url = url.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{}", show(&out));
        let token = std::fs::read_to_string(self.data().join("daemon.token")).unwrap();
        (url, token.trim().to_string())
    }

    fn status(&self) -> (i32, Value) {
        let out = self.run(&["daemon", "status", "--json"]);
        let doc =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
        (out.status.code().unwrap_or(-1), doc)
    }

    fn stop_daemon(&self) {
        let out = self.run(&["daemon", "stop"]);
        assert!(out.status.success(), "{}", show(&out));
        let left = self.wait_no_processes(Duration::from_secs(3));
        assert!(left.is_empty(), "processes left behind: {left:?}");
        assert!(!self.data().join("daemon.json").exists());
    }

    fn wait_no_processes(&self, within: Duration) -> Vec<(u32, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = processes_under(self.path());
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A failed test must not leak a daemon or an OpenCode into the next ones.
        for (pid, _) in processes_under(self.path()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One HTTP request (bounded to 10 s): status and body.
fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    openwrk::install_crypto_provider();
    block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    })
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Reads an event stream until `needle` shows up (proves it streams, not buffers).
fn sse_until(url: &str, token: &str, needle: &str) -> String {
    use futures_util::StreamExt as _;
    openwrk::install_crypto_provider();
    block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client
            .get(url)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut stream = r.bytes_stream();
        let mut seen = String::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if seen.contains(needle) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s"));
        seen
    })
}

#[test]
fn two_workspaces_share_one_opencode_and_the_api_is_guarded() {
    let env = Env::new();
    let (a, b) = (env.dir("ws a"), env.dir("wsb"));
    let (url, token) = env.start_daemon(&standin("standin-opencode"));
    let t = Some(token.as_str());

    use std::os::unix::fs::PermissionsExt;
    for f in ["daemon.json", "daemon.token"] {
        let mode = std::fs::metadata(env.data().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (code, status) = env.status();
    assert_eq!(code, 0, "{status}");
    let oc_pid = status["opencode"]["pid"].as_u64().unwrap();
    let oc_url = status["opencode"]["url"].as_str().unwrap().to_string();

    let (s, empty) = http("GET", &format!("{url}/workspaces"), t, None);
    assert_eq!((s, empty.as_str()), (200, r#"{"workspaces":[]}"#));
    // One workspace through the CLI (the daemon notices the file change), one through the API.
    let out = env.run(&["workspace", "add", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let id_a = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let body = format!(r#"{{"path":{:?}}}"#, b.to_str().unwrap());
    let (s, created) = http("POST", &format!("{url}/workspaces"), t, Some(&body));
    assert_eq!(s, 201, "{created}");
    let id_b = json(&created)["id"].as_str().unwrap().to_string();
    let (s, again) = http("POST", &format!("{url}/workspaces"), t, Some(&body));
    assert_eq!(
        (s, json(&again)["id"].as_str().unwrap()),
        (200, id_b.as_str())
    );
    let (s, list) = http("GET", &format!("{url}/workspaces"), t, None);
    assert_eq!(s, 200);
    let list = json(&list);
    let ids: Vec<&str> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&id_a.as_str()) && ids.contains(&id_b.as_str()));

    // Requests reach OpenCode with the workspace's directory, whatever the client says.
    let (s, health) = http(
        "GET",
        &format!("{url}/w/{id_a}/global/health?x=1&directory=/etc"),
        t,
        None,
    );
    assert_eq!(s, 200, "{health}");
    assert_eq!(json(&health)["healthy"], true);
    // A request body streams through too.
    let (s, disposed) = http(
        "POST",
        &format!("{url}/w/{id_b}/instance/dispose"),
        t,
        Some("{}"),
    );
    assert_eq!((s, disposed.trim()), (200, "true"));
    let events = sse_until(&format!("{url}/w/{id_a}/event"), &token, "server.connected");
    assert!(events.starts_with("data: "), "{events}");
    let (_, seen) = http("GET", &format!("{oc_url}/_standin/directories"), None, None);
    let mut seen: Vec<String> = serde_json::from_str(&seen).unwrap();
    seen.sort();
    let mut want = vec![a.display().to_string(), b.display().to_string()];
    want.sort();
    assert_eq!(seen, want, "OpenCode saw exactly the two workspaces");
    let (_, status) = env.status();
    assert_eq!(
        status["opencode"]["pid"].as_u64(),
        Some(oc_pid),
        "one OpenCode"
    );

    // Dispose through the CLI; an unknown id names itself.
    let out = env.run(&["instance", "dispose", &id_a]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("true"));
    let out = env.run(&["instance", "dispose", "ws_000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ws_000000000000") && err.contains("hint:"),
        "{err}"
    );

    // Everything but /health wants the token.
    let (s, h) = http("GET", &format!("{url}/health"), None, None);
    assert_eq!((s, json(&h)["ok"].clone()), (200, Value::Bool(true)));
    assert_eq!(json(&h)["opencode"]["pid"].as_u64(), Some(oc_pid));
    for (method, path) in [
        ("GET", "/workspaces".to_string()),
        ("POST", "/workspaces".to_string()),
        ("DELETE", format!("/workspaces/{id_a}")),
        ("POST", format!("/workspaces/{id_a}/dispose")),
        ("GET", format!("/w/{id_a}/global/health")),
    ] {
        for bad in [None, Some("wrong-token")] {
            let (s, body) = http(method, &format!("{url}{path}"), bad, Some("{}"));
            assert_eq!(s, 401, "{method} {path} with {bad:?}: {body}");
            assert_eq!(json(&body)["code"], "unauthorized", "{body}");
        }
    }
    let (s, body) = http("GET", &format!("{url}/w/ws_000000000000/x"), t, None);
    assert_eq!(
        (s, json(&body)["code"].clone()),
        (404, "workspace_not_found".into())
    );

    let (s, _) = http("DELETE", &format!("{url}/workspaces/{id_b}"), t, None);
    assert_eq!(s, 204);
    let out = env.run(&["workspace", "list", "--json"]);
    let list = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 1, "{list}");
    let (s, _) = http("GET", &format!("{url}/w/{id_b}/global/health"), t, None);
    assert_eq!(s, 404);

    // Starting again finds the running daemon.
    let out = env.run(&["daemon", "start"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), url);

    env.stop_daemon();
    let out = env.run(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon is running"));
    let out = env.run(&["instance", "dispose", &id_a]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon is running"));
}

#[test]
fn the_daemon_restarts_a_crashed_opencode_with_backoff() {
    let env = Env::new();
    let ws = env.dir("ws");
    let (url, token) = env.start_daemon(&standin("standin-opencode"));
    let id = {
        let out = env.run(&["workspace", "add", ws.to_str().unwrap()]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (_, before) = env.status();
    let daemon_pid = before["pid"].as_u64().unwrap();
    let old = before["opencode"]["pid"].as_u64().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(old as i32, libc::SIGKILL);
    }
    let crashed = Instant::now();
    let deadline = crashed + Duration::from_secs(15);
    let after = loop {
        let (code, s) = env.status();
        let pid = s["opencode"]["pid"].as_u64();
        if code == 0 && pid.is_some() && pid != Some(old) {
            break s;
        }
        assert!(Instant::now() < deadline, "no restart within 15 s: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The first restart waits 1 s.
    assert!(crashed.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        after["pid"].as_u64(),
        Some(daemon_pid),
        "the daemon survived"
    );
    assert!(
        after["opencode"]["restarts"].as_u64().unwrap() >= 1,
        "{after}"
    );
    assert!(
        after["opencode"]["lastExit"]["status"]
            .as_str()
            .unwrap()
            .contains("signal 9"),
        "{after}"
    );
    let (s, _) = http(
        "GET",
        &format!("{url}/w/{id}/global/health"),
        Some(&token),
        None,
    );
    assert_eq!(s, 200);
    let text = env.run(&["daemon", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("last exit: killed by signal 9"), "{text}");
    env.stop_daemon();
}

#[test]
fn sigkill_of_a_foreground_daemon_takes_every_grandchild_down() {
    let env = Env::new();
    let marker = format!("gc-{}", env.path().file_name().unwrap().to_string_lossy());
    let log = std::fs::File::create(env.path().join("daemon.err")).unwrap();
    let mut cmd = env.openwrk(&[
        "daemon",
        "start",
        "--foreground",
        "--opencode-bin",
        standin("standin-opencode").to_str().unwrap(),
    ]);
    cmd.env("STANDIN_MODE", "grandchildren")
        .env("STANDIN_MARKER", &marker)
        .stdout(Stdio::piped())
        .stderr(log);
    let mut daemon = cmd.spawn().unwrap();
    // The URL on stdout means OpenCode is healthy (its grandchildren were started on listening).
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(daemon.stdout.take().unwrap()),
        &mut url,
    )
    .unwrap();
    let err = || std::fs::read_to_string(env.path().join("daemon.err")).unwrap_or_default();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}\n{}", err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_matching(&marker).len() < 3 {
        assert!(Instant::now() < deadline, "no grandchildren: {}", err());
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill().unwrap();
    let killed = Instant::now();
    daemon.wait().unwrap();
    loop {
        let left = processes_matching(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "still alive 2 s later: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
}

#[test]
fn daemon_stop_never_signals_a_pid_that_another_process_now_has() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let mut bystander = Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = bystander.id();
    std::fs::create_dir_all(env.data()).unwrap();
    let record = serde_json::json!({
        "pid": pid, "processStart": 1, "url": "http://127.0.0.1:1", "host": "127.0.0.1",
        "port": 1, "startedAt": "2020-01-01T00:00:00Z", "version": "0.0.0", "runId": "r",
        "dataDir": env.data(), "log": null,
        "opencode": {"pid": pid, "processStart": 1, "port": 2, "url": null, "version": null,
                     "binary": "/nonexistent", "restarts": 0, "lastExit": null}
    });
    let path = env.data().join("daemon.json");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let out = env.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("was no longer running; removed its record"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "pid {pid} (daemon) now belongs to another process (sleep"
        )),
        "{stdout}"
    );
    assert!(!path.exists());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "signalled a bystander"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn concurrent_starts_agree_on_one_daemon() {
    let env = Env::new();
    let oc = standin("standin-opencode");
    let children: Vec<_> = (0..3)
        .map(|_| {
            env.openwrk(&["daemon", "start", "--opencode-bin", oc.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let urls: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", show(&out));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect();
    assert!(urls.iter().all(|u| u == &urls[0]), "{urls:?}");
    let daemons = processes_under(env.path())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("daemon start"))
        .count();
    assert_eq!(daemons, 1);
    env.stop_daemon();
}

#[test]
fn parallel_adds_lose_nothing_and_ids_are_stable() {
    let env = Env::new();
    let dirs: Vec<PathBuf> = (0..20).map(|i| env.dir(&format!("w{i:02}"))).collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            env.openwrk(&["workspace", "add", d.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut printed = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        printed.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }
    let out = env.run(&["workspace", "list", "--json"]);
    let list = json(&String::from_utf8_lossy(&out.stdout));
    let listed = list["workspaces"].as_array().unwrap();
    assert_eq!(listed.len(), 20, "{list}");
    for (dir, id) in dirs.iter().zip(&printed) {
        let w = listed.iter().find(|w| w["id"] == id.as_str()).unwrap();
        assert_eq!(w["path"], dir.display().to_string());
        assert!(w["addedAt"].as_str().unwrap().ends_with('Z'));
    }

    // The same directory by another spelling: the same id, no new entry.
    let again = env.run(&[
        "workspace",
        "add",
        &format!("{}/../w03/.", dirs[3].display()),
    ]);
    assert!(again.status.success(), "{}", show(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), printed[3]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already added"));
    let out = env.run(&["workspace", "path", &printed[3]]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dirs[3].display().to_string()
    );
    let out = env.run(&["workspace", "remove", &printed[3]]);
    assert!(out.status.success(), "{}", show(&out));
    let out = env.run(&["workspace", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 20, "header + 19:\n{text}");
    assert!(text.starts_with("ID "), "{text}");

    let out = env.run(&["workspace", "path", "ws_nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workspace id ws_nope"));
    let out = env.run(&[
        "workspace",
        "add",
        env.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an existing directory"));
    std::fs::write(env.path().join("file"), "x").unwrap();
    let out = env.run(&[
        "workspace",
        "add",
        env.path().join("file").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn a_corrupt_state_file_is_reported_kept_and_never_replaced() {
    let env = Env::new();
    let ws = env.dir("ws");
    let (url, token) = env.start_daemon(&standin("standin-opencode"));
    let state = env.data().join("workspaces.json");
    let garbage = b"{\"workspaces\": [{\"id\": \"ws_1\", \"path\": \"/x\"";
    std::fs::write(&state, garbage).unwrap();
    // The daemon refuses to guess, too, and says which file.
    for _ in 0..2 {
        let (s, body) = http("GET", &format!("{url}/workspaces"), Some(&token), None);
        assert_eq!(s, 500, "{body}");
        assert!(json(&body)["message"]
            .as_str()
            .unwrap()
            .contains(&state.display().to_string()));
    }
    for args in [
        vec!["workspace", "list"],
        vec!["workspace", "add", ws.to_str().unwrap()],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&state.display().to_string()), "{err}");
        assert!(err.contains("corrupt") && err.contains("hint:"), "{err}");
    }
    assert_eq!(
        std::fs::read(&state).unwrap(),
        garbage,
        "original untouched"
    );
    let copies: Vec<PathBuf> = std::fs::read_dir(env.data())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("workspaces.json.corrupt-")
        })
        .collect();
    assert_eq!(copies.len(), 1, "one copy per distinct content: {copies:?}");
    assert_eq!(std::fs::read(&copies[0]).unwrap(), garbage);
    env.stop_daemon();
}

#[test]
fn start_failures_are_clear_and_leave_nothing() {
    let env = Env::new();
    // OpenCode that exits at once: the daemon reports it with its last lines.
    let mut cmd = env.openwrk(&[
        "daemon",
        "start",
        "--opencode-bin",
        standin("standin-opencode").to_str().unwrap(),
    ]);
    cmd.env("STANDIN_MODE", "exit:3");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opencode exited during startup (exit status 3)"),
        "{err}"
    );
    assert!(err.contains("daemon.log") && err.contains("hint:"), "{err}");
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
    assert!(!env.data().join("daemon.json").exists());

    // A busy --daemon-port is a usage error naming the flag.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = env.run(&[
        "daemon",
        "start",
        "--daemon-port",
        &port,
        "--opencode-bin",
        standin("standin-opencode").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} is in use (--daemon-port")),
        "{err}"
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
    let out = env.run(&["daemon", "stop"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

#[test]
fn real_opencode_serves_two_workspaces_through_the_router() {
    let Some(bin) = openwrk_test_support::real_opencode() else {
        return;
    };
    let env = Env::new();
    let (a, b) = (env.dir("alpha"), env.dir("beta"));
    let home = env.path().join("home");
    let mut cmd = env.openwrk(&["daemon", "start", "--opencode-bin", bin.to_str().unwrap()]);
    openwrk_test_support::private_opencode_env(&mut cmd, &home);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let token = std::fs::read_to_string(env.data().join("daemon.token")).unwrap();
    let t = Some(token.trim());
    let (_, before) = env.status();
    for dir in [&a, &b] {
        let out = env.run(&["workspace", "add", dir.to_str().unwrap()]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // OpenCode reports the directory each request was served in.
        let (s, path) = http("GET", &format!("{url}/w/{id}/path"), t, None);
        assert_eq!(s, 200, "{path}");
        assert_eq!(
            json(&path)["directory"],
            dir.display().to_string(),
            "{path}"
        );
        let (s, sessions) = http("GET", &format!("{url}/w/{id}/session"), t, None);
        assert_eq!(s, 200, "{sessions}");
        assert!(json(&sessions).is_array(), "{sessions}");
        let events = sse_until(
            &format!("{url}/w/{id}/event"),
            token.trim(),
            "server.connected",
        );
        assert!(events.contains("server.connected"));
        let out = env.run(&["instance", "dispose", &id]);
        assert!(out.status.success(), "{}", show(&out));
    }
    let (code, after) = env.status();
    assert_eq!(code, 0, "{after}");
    assert_eq!(
        before["opencode"]["pid"], after["opencode"]["pid"],
        "one OpenCode"
    );
    assert!(after["opencode"]["version"].as_str().unwrap().contains('.'));
    env.stop_daemon();
}
