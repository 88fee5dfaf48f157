//! Upstream parity (issue 17): upstream command lines and environment run
//! unchanged, OpenCode gets its log level and hot-reload settings (in a run
//! and from the daemon), `daemon run`, `workspace switch` and the daemon's
//! active workspace. Driven through the real binary and the stand-ins,
//! which report what they were started with (`STANDIN_LAUNCH_FILE`,
//! `GET /_standin/launch`).

#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::standins::{http, json, run_to_end, Env, Run};
use serde_json::Value;

fn launch_file(path: &Path) -> Value {
    json(&std::fs::read_to_string(path).unwrap())
}

fn args_of(launch: &Value) -> String {
    let args: Vec<&str> = launch["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    args.join(" ")
}

#[test]
fn opencode_gets_log_level_and_hot_reload_settings_in_a_run() {
    let env = Env::new("openwrk-parity-");
    let file = env.path().join("launch.json");
    // Defaults: INFO, hot reload on, 700 / 1500 ms.
    let mut cmd = env.serve(&["--check"]);
    cmd.env("STANDIN_LAUNCH_FILE", &file);
    let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let l = launch_file(&file);
    assert!(args_of(&l).contains("--print-logs --log-level INFO"), "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD"], "1", "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD_DEBOUNCE_MS"], "700", "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD_COOLDOWN_MS"], "1500", "{l}");

    // Flags, our variables and upstream's variables.
    let mut cmd = env.serve(&[
        "--check",
        "--opencode-log-level",
        "debug",
        "--no-opencode-hot-reload",
        "--opencode-hot-reload-debounce-ms",
        "900",
    ]);
    cmd.env("STANDIN_LAUNCH_FILE", &file)
        .env("OPENWORK_OPENCODE_HOT_RELOAD_COOLDOWN_MS", "2500");
    let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let l = launch_file(&file);
    assert!(args_of(&l).contains("--log-level DEBUG"), "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD"], "0", "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD_DEBOUNCE_MS"], "900", "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD_COOLDOWN_MS"], "2500", "{l}");

    // `--opencode-hot-reload=false` and OPENWRK_OPENCODE_HOT_RELOAD=0 turn it off too.
    for (arg, var) in [
        (Some("--opencode-hot-reload=false"), None),
        (None, Some("0")),
    ] {
        let mut cmd = env.serve(&["--check"]);
        if let Some(a) = arg {
            cmd.arg(a);
        }
        if let Some(v) = var {
            cmd.env("OPENWRK_OPENCODE_HOT_RELOAD", v);
        }
        cmd.env("STANDIN_LAUNCH_FILE", &file);
        let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
        assert!(status.success(), "{stderr}");
        assert_eq!(launch_file(&file)["env"]["OPENCODE_HOT_RELOAD"], "0");
    }
}

#[test]
fn upstream_flag_spellings_run_unchanged() {
    let env = Env::new("openwrk-parity-");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let (status, stdout, stderr) = run_to_end(
        env.serve(&[
            "--check",
            "--json",
            "--tui",
            "--no-color",
            "--opencode-auth",
            "--openwork-host-token",
            "upstream-host-token-1234567890",
            "--opencode-router-health-port",
            &port,
            "--opencode-router-required",
        ]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    // --no-color: no escapes.
    assert!(!stderr.contains('\x1b'), "{stderr}");
    let p = json(&stdout);
    assert_eq!(p["openwork"]["hostToken"], "upstream-host-token-1234567890");
    assert_eq!(p["owpenbot"]["healthPort"].to_string(), port);

    // --no-opencode-router; --color as a switch forces colors.
    let (status, stdout, stderr) = run_to_end(
        env.serve(&["--check", "--json", "--no-opencode-router", "--color"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(json(&stdout)["owpenbot"]["enabled"], false);
    assert!(stderr.contains("\x1b["), "{stderr}");

    // Upstream's variable for the router's health port.
    let mut cmd = env.serve(&["--check", "--json"]);
    cmd.env("OPENCODE_ROUTER_HEALTH_PORT", &port);
    let (status, stdout, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    assert_eq!(json(&stdout)["owpenbot"]["healthPort"].to_string(), port);
}

#[test]
fn turning_opencode_auth_off_is_refused_in_one_line() {
    let env = Env::new("openwrk-parity-");
    let mut by_env = env.serve(&["--check"]);
    by_env.env("OPENWORK_OPENCODE_AUTH", "false");
    for cmd in [env.serve(&["--check", "--no-opencode-auth"]), by_env] {
        let (status, stdout, stderr) = run_to_end(cmd, Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert_eq!(stdout, "");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: --no-opencode-auth is not supported: OpenCode always runs behind basic auth"),
            "{stderr}"
        );
    }
    let (status, _, stderr) = run_to_end(
        env.bare(&["daemon", "run", "--no-opencode-auth"]),
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(env.wait_no_processes(Duration::from_secs(2)).is_empty());
}

/// `daemon run` in the foreground (with extra variables): its URL on stdout once ready.
fn daemon_run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> (Run, String, String) {
    let mut cmd = env.bare(&["daemon", "run", "--opencode-bin"]);
    cmd.arg(openwrk_test_support::standin("standin-opencode"))
        .args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let run = Run::start(cmd);
    let url = run.wait_line(false, "http://", Duration::from_secs(20));
    let token = std::fs::read_to_string(env.data().join("daemon.token")).unwrap();
    (run, url.trim().to_string(), token.trim().to_string())
}

fn daemon_run(env: &Env, args: &[&str]) -> (Run, String, String) {
    daemon_run_with(env, args, &[])
}

#[test]
fn daemon_run_is_the_foreground_daemon_with_workdir_and_opencode_settings() {
    let env = Env::new("openwrk-parity-");
    let workdir = env.dir("oc-home");
    let (mut run, url, _) = daemon_run_with(
        &env,
        &[
            "--opencode-workdir",
            workdir.to_str().unwrap(),
            "--opencode-hot-reload=false",
            "--opencode-log-level",
            "WARN",
        ],
        &[("OPENWORK_OPENCODE_HOT_RELOAD_DEBOUNCE_MS", "800")],
    );
    let (s, health) = http("GET", &format!("{url}/health"), None);
    assert_eq!(s, 200, "{health}");
    let oc = json(&health)["opencode"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, launch) = http("GET", &format!("{oc}/_standin/launch"), None);
    let l = json(&launch);
    assert_eq!(l["cwd"], workdir.display().to_string(), "{l}");
    assert!(args_of(&l).contains("--log-level WARN"), "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD"], "0", "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD_DEBOUNCE_MS"], "800", "{l}");
    assert_eq!(l["env"]["OPENCODE_HOT_RELOAD_COOLDOWN_MS"], "1500", "{l}");
    // `daemon status` sees it like one started with `daemon start`.
    let out = env.bare(&["daemon", "status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout))["url"], url);
    run.signal(libc::SIGTERM);
    assert!(
        run.wait(Duration::from_secs(10)).success(),
        "{}",
        run.stderr()
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());

    // A workdir that does not exist is a usage error.
    let (status, _, stderr) = run_to_end(
        env.bare(&["daemon", "run", "--opencode-workdir", "/nonexistent/dir"]),
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--opencode-workdir /nonexistent/dir"),
        "{stderr}"
    );
}

fn workspace(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["workspace"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.bare(&all).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn workspace_switch_picks_where_requests_that_name_none_go() {
    let env = Env::new("openwrk-parity-");
    let (a, b) = (env.dir("a"), env.dir("b"));
    let id_a = workspace(&env, &["add", a.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let added = workspace(&env, &["add", b.to_str().unwrap(), "--name", "Bee"]);
    assert_eq!(
        (added["name"].clone(), added["created"].clone()),
        ("Bee".into(), true.into())
    );
    let id_b = added["id"].as_str().unwrap().to_string();
    // The first one added is active until another is chosen.
    assert_eq!(workspace(&env, &["list"])["activeId"], id_a.as_str());

    let (mut run, url, token) = daemon_run(&env, &[]);
    let seen = |url: &str| {
        // Any OpenCode path that names no workspace, then what the stand-in saw.
        let (s, body) = http("GET", &format!("{url}/session"), Some(&token));
        assert_eq!(s, 404, "the stand-in has no /session: {body}");
        let (s, body) = http("GET", &format!("{url}/_standin/directories"), Some(&token));
        assert_eq!(s, 200, "{body}");
        json(&body)
    };
    assert_eq!(seen(&url), serde_json::json!([a.display().to_string()]));
    let switched = workspace(&env, &["switch", &id_b]);
    assert_eq!(switched["activeId"], id_b.as_str());
    let dirs = seen(&url);
    assert!(
        dirs.as_array()
            .unwrap()
            .contains(&b.display().to_string().into()),
        "{dirs}"
    );
    // The API does the same, and lists the active one.
    let (s, body) = http(
        "POST",
        &format!("{url}/workspaces/{id_a}/activate"),
        Some(&token),
    );
    assert_eq!(s, 200, "{body}");
    let (_, list) = http("GET", &format!("{url}/workspaces"), Some(&token));
    assert_eq!(json(&list)["activeId"], id_a.as_str());
    // Without the token, nothing; without an active workspace, a 404 that says why.
    let (s, _) = http("GET", &format!("{url}/session"), None);
    assert_eq!(s, 401);
    workspace(&env, &["remove", &id_a]);
    let (s, body) = http("GET", &format!("{url}/session"), Some(&token));
    assert_eq!(
        (s, json(&body)["code"].clone()),
        (404, "no_active_workspace".into())
    );
    // An unknown id names itself.
    let out = env
        .bare(&["workspace", "switch", "ws_000000000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workspace id ws_000000000000"));
    run.signal(libc::SIGTERM);
    assert!(
        run.wait(Duration::from_secs(10)).success(),
        "{}",
        run.stderr()
    );
}

#[test]
fn the_daemons_503_names_the_restart_under_way_and_counts_it_once() {
    let env = Env::new("openwrk-parity-");
    let ws = env.dir("ws1");
    let id = workspace(&env, &["add", ws.to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut run, url, token) = daemon_run(&env, &[]);
    let health = || json(&http("GET", &format!("{url}/health"), None).1);
    let old = health()["opencode"]["pid"].as_u64().unwrap();
    common::standins::signal(old as u32, libc::SIGKILL);
    // Within the first restart's 1 s delay: counted once, and the proxy says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    let during = loop {
        let h = health();
        if h["opencode"]["pid"].is_null() {
            break h;
        }
        assert!(Instant::now() < deadline, "never saw the exit: {h}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(during["opencode"]["restarts"], 1, "{during}");
    let (s, body) = http("GET", &format!("{url}/w/{id}/global/health"), Some(&token));
    let b = json(&body);
    assert_eq!(
        (s, b["code"].clone()),
        (503, "opencode_unavailable".into()),
        "{body}"
    );
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("restarting") && message.contains("(restart 1)"),
        "{message}"
    );
    assert!(message.contains("signal 9"), "{message}");
    // Back: still one restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let h = health();
        if h["opencode"]["pid"].as_u64().is_some_and(|p| p != old)
            && h["opencode"]["healthy"] == true
        {
            break h;
        }
        assert!(Instant::now() < deadline, "no restart: {h}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(after["opencode"]["restarts"], 1, "{after}");
    let (s, _) = http("GET", &format!("{url}/w/{id}/global/health"), Some(&token));
    assert_eq!(s, 200);
    run.signal(libc::SIGTERM);
    assert!(
        run.wait(Duration::from_secs(10)).success(),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("restart 1 in 1.0 s"),
        "{}",
        run.stderr()
    );
}

#[test]
fn the_real_opencode_takes_the_log_level_and_hot_reload_settings() {
    let Some(bin) = std::env::var_os("OPENWRK_TEST_OPENCODE_BIN").filter(|v| !v.is_empty()) else {
        println!(
            "skipped: OPENWRK_TEST_OPENCODE_BIN is not set (.ci/run fetches the real OpenCode)"
        );
        return;
    };
    let env = Env::new("openwrk-parity-");
    let home = env.path().join("home");
    let run = |level: &str| {
        let mut cmd = env.sidecars(
            "serve",
            &[
                "--check",
                "--opencode-log-level",
                level,
                "--no-opencode-hot-reload",
            ],
            [Some(std::path::PathBuf::from(&bin)), None, None],
        );
        openwrk_test_support::private_opencode_env(&mut cmd, &home);
        let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(90));
        assert!(status.success(), "{level}: {stderr}");
        stderr
            .lines()
            // Its own log lines, not the banner it prints on stdout at any level.
            .filter(|l| l.contains(" INFO  opencode ") && !l.contains("server listening"))
            .count()
    };
    // At INFO the real OpenCode logs its start-up; at ERROR it says nothing at INFO.
    assert!(run("INFO") > 0);
    assert_eq!(run("ERROR"), 0);
}
