//! How openwrk talks to an operator (issue 17), through the real binary and
//! the stand-ins: progress while sidecars start, one failure report whose
//! hint matches the facts, the busy default port, severities of child lines,
//! quiet health probes, sidecar attributes and run ids in JSON logs, one
//! JSON document per command with `--json`, and the offline first start.

#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::standins::{http_with, json, records, run_to_end, Env};
use serde_json::Value;

#[test]
fn a_slow_sidecar_is_named_every_few_seconds_without_verbose() {
    let env = Env::new("openwrk-ux-");
    let slow = env.wrapper("standin-opencode", "STANDIN_MODE=slow-start:6s", "");
    let (status, _, stderr) = run_to_end(
        env.sidecars("serve", &["--check"], [Some(slow), None, None]),
        Duration::from_secs(40),
    );
    assert!(status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("still starting: opencode (5 s"))
        .unwrap_or_else(|| panic!("no progress line:\n{stderr}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("connection refused"), "{line}");
}

#[test]
fn a_startup_failure_is_reported_once_with_a_hint_that_matches() {
    let env = Env::new("openwrk-ux-");
    // Prints nothing and exits: the hint must not point at log lines.
    let silent = env.script("silent-opencode", "exit 3");
    let (status, _, stderr) = run_to_end(
        env.sidecars("serve", &["--check"], [Some(silent), None, None]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("opencode exited during startup").count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains(" ERROR "),
        "no ERROR log line too:\n{stderr}"
    );
    assert!(stderr.contains("opencode printed nothing"), "{stderr}");
    assert!(
        stderr.contains("hint: it printed nothing before exiting"),
        "{stderr}"
    );
    assert!(!stderr.contains("log lines (above)"), "{stderr}");

    // Prints why: the hint says the lines say why.
    let talking = env.wrapper("standin-opencode", "STANDIN_MODE=exit:3", "");
    let (status, _, stderr) = run_to_end(
        env.sidecars("serve", &["--check"], [Some(talking), None, None]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("exited during startup").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: its last log lines (above) say why"),
        "{stderr}"
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
}

#[test]
fn a_busy_default_port_is_named_with_the_one_used() {
    let env = Env::new("openwrk-ux-");
    // Whoever holds 8787 (this test or another program), it is busy.
    let _held = std::net::TcpListener::bind(("127.0.0.1", 8787));
    if std::net::TcpListener::bind(("127.0.0.1", 8787)).is_ok() {
        println!("skipped: cannot make port 8787 busy");
        return;
    }
    let (status, stdout, stderr) = run_to_end(
        env.sidecars_on_default_port("serve", &["--check", "--json"], [None, None, None]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let url = json(&stdout)["openwork"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let port = url.rsplit(':').next().unwrap();
    assert_ne!(port, "8787");
    assert!(
        stderr.contains(&format!(
            "port 8787 is in use, so it listens on port {port} instead"
        )),
        "{stderr}"
    );
}

#[test]
fn child_lines_carry_their_own_severity_and_probe_lines_stay_out() {
    let env = Env::new("openwrk-ux-");
    let noisy = env.wrapper(
        "standin-openwork-server",
        "",
        "echo 'ERROR 2026-01-02T03:04:05 +1ms service=server cannot open db' >&2; echo '[WARN] slow disk' >&2; echo 'level=error msg=\"x\" trailing' >&2",
    );
    let (status, _, stderr) = run_to_end(
        env.sidecars(
            "serve",
            &["--check", "--log-format", "json", "--run-id", "ux-1"],
            [None, Some(noisy.clone()), None],
        ),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let recs = records(&stderr);
    let find = |needle: &str| -> &Value {
        recs.iter()
            .find(|r| r["body"].as_str().unwrap_or_default().contains(needle))
            .unwrap_or_else(|| panic!("no record with {needle:?}:\n{stderr}"))
    };
    let db = find("cannot open db");
    assert_eq!(db["severityText"], "ERROR", "{db}");
    assert_eq!(db["body"], "service=server cannot open db", "{db}");
    assert_eq!(find("slow disk")["severityText"], "WARN");
    assert_eq!(find("trailing")["severityText"], "ERROR");
    // openwrk's records about a sidecar name it as an attribute.
    let healthy = find("opencode is healthy");
    assert_eq!(healthy["attributes"]["service.name"], "openwrk");
    assert_eq!(healthy["attributes"]["sidecar"], "opencode", "{healthy}");
    assert_eq!(
        find("openwork-server is healthy")["attributes"]["sidecar"],
        "openwork-server"
    );
    assert!(recs.iter().all(|r| r["attributes"]["run.id"] == "ux-1"));
    // The health probes' request lines are not in the log…
    for r in &recs {
        let body = r["body"].as_str().unwrap_or_default();
        let path = r["attributes"]["path"].as_str().unwrap_or_default();
        assert!(!body.starts_with("GET /health 200"), "{r}");
        assert!(path != "/global/health", "{r}");
    }
    // …unless --verbose asks for everything (then as DEBUG).
    let (status, _, stderr) = run_to_end(
        env.serve(&["--check", "--verbose"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let probe = stderr
        .lines()
        .find(|l| l.contains("GET /health 200"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(probe.contains(" DEBUG "), "{probe}");
}

#[test]
fn steady_state_polling_adds_nothing_to_the_log() {
    let env = Env::new("openwrk-ux-");
    let (status, stdout, stderr) = run_to_end(
        env.serve(&["--detach", "--json", "--run-id", "quiet-1"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let p = json(stdout.trim());
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("opencode:{}", p["opencode"]["password"].as_str().unwrap())
        )
    );
    let (oc, ow) = (
        p["opencode"]["url"].as_str().unwrap(),
        p["openwork"]["url"].as_str().unwrap(),
    );
    // What the dashboard does every 2 s, a few times over, with and without
    // the probes' User-Agent; and one ordinary request.
    for _ in 0..5 {
        for ua in ["openwrk-probe/0.1.0", "curl/8"] {
            let (s, _) = http_with(
                "GET",
                &format!("{oc}/global/health"),
                &[("authorization", &basic), ("user-agent", ua)],
            );
            assert_eq!(s, 200);
            let (s, _) = http_with("GET", &format!("{ow}/health"), &[("user-agent", ua)]);
            assert_eq!(s, 200);
        }
    }
    let token = format!("Bearer {}", p["openwork"]["token"].as_str().unwrap());
    let (s, _) = http_with(
        "GET",
        &format!("{ow}/workspaces"),
        &[("authorization", &token)],
    );
    assert_eq!(s, 200);
    let log_path = env.data().join("runs").join("quiet-1.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("GET /workspaces 200") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        log.contains("GET /workspaces 200"),
        "requests are logged:\n{log}"
    );
    assert!(!log.contains("GET /health 200"), "{log}");
    assert!(!log.contains("path=/global/health"), "{log}");
    let out = env.bare(&["stop", "--run-id", "quiet-1"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(env.wait_no_processes(Duration::from_secs(5)).is_empty());
}

#[test]
fn a_failing_health_check_is_still_reported() {
    let env = Env::new("openwrk-ux-");
    let sick = env.wrapper("standin-openwork-server", "STANDIN_MODE=never-healthy", "");
    let (status, _, stderr) = run_to_end(
        env.sidecars(
            "serve",
            &["--check", "--startup-timeout", "2"],
            [None, Some(sick), None],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("GET /health 503"),
        "the child's own line stays:\n{stderr}"
    );
    assert!(
        stderr.contains("openwork-server did not become healthy within 2 s")
            && stderr.contains("HTTP 503"),
        "{stderr}"
    );
}

#[test]
fn daemon_records_carry_the_run_id_of_the_daemon() {
    let env = Env::new("openwrk-ux-");
    let oc = openwrk_test_support::standin("standin-opencode");
    let mut cmd = env.bare(&["daemon", "start", "--log-format", "json", "--opencode-bin"]);
    cmd.arg(&oc);
    let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let log = std::fs::read_to_string(env.data().join("daemon.log")).unwrap();
    let mut all = records(&stderr);
    all.extend(records(&log));
    assert!(all.len() >= 2, "{stderr}\n{log}");
    let id = all[0]["attributes"]["run.id"].as_str().unwrap().to_string();
    assert!(!id.is_empty(), "{stderr}");
    for r in &all {
        assert_eq!(r["attributes"]["run.id"], id.as_str(), "{r}");
    }
    let record = json(&std::fs::read_to_string(env.data().join("daemon.json")).unwrap());
    assert_eq!(record["runId"], id.as_str(), "{record}");
    let out = env.bare(&["daemon", "stop"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// stdout is exactly one JSON document.
fn one_document(args: &[&str], stdout: &str) -> Value {
    let mut docs = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let first = docs
        .next()
        .unwrap_or_else(|| panic!("{args:?}: nothing on stdout"))
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"));
    assert!(
        docs.next().is_none(),
        "{args:?}: more than one document: {stdout}"
    );
    first
}

#[test]
fn json_means_one_document_on_stdout_for_every_command() {
    let env = Env::new("openwrk-ux-");
    let ws = env.dir("a");
    let ws = ws.to_str().unwrap();
    let dead = "http://127.0.0.1:9";
    let id = {
        let out = env
            .bare(&["workspace", "add", ws, "--json"])
            .output()
            .unwrap();
        let doc = one_document(&["workspace", "add"], &String::from_utf8_lossy(&out.stdout));
        assert_eq!(doc["created"], true);
        doc["id"].as_str().unwrap().to_string()
    };
    let ok: Vec<Vec<&str>> = vec![
        vec!["workspace", "add", ws],
        vec!["workspace", "list"],
        vec!["workspace", "path", &id],
        vec!["workspace", "switch", &id],
        vec!["completions", "bash"],
    ];
    let failing: Vec<(Vec<&str>, i32)> = vec![
        (vec!["workspace", "path", "ws_000000000000"], 1),
        (vec!["stop"], 1),
        (vec!["daemon", "stop"], 1),
        (vec!["daemon", "status"], 1),
        (vec!["instance", "dispose", &id], 1),
        (vec!["status", "--openwork-url", dead], 1),
        (
            vec![
                "approvals",
                "list",
                "--openwork-url",
                dead,
                "--host-token",
                "t",
            ],
            1,
        ),
        (vec!["serve", "--no-opencode-auth"], 2),
        (vec!["workspace", "remove", &id], 0),
    ];
    for args in &ok {
        let mut all = args.clone();
        all.push("--json");
        let out = env.bare(&all).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        one_document(args, &String::from_utf8_lossy(&out.stdout));
    }
    for (args, code) in &failing {
        let mut all = args.clone();
        all.push("--json");
        let out = env.bare(&all).output().unwrap();
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {out:?}");
        let doc = one_document(args, &String::from_utf8_lossy(&out.stdout));
        // `daemon status` and `status` report a state (running: false,
        // healthy: false); the others fail with an error document.
        let report = args.starts_with(&["daemon", "status"]) || args[0] == "status";
        if *code != 0 && !report {
            assert_eq!(doc["ok"], false, "{args:?}: {doc}");
            assert_eq!(doc["error"]["exitCode"], *code, "{args:?}: {doc}");
            assert!(doc["error"]["message"].as_str().is_some(), "{doc}");
        }
    }
}

#[test]
fn offline_first_start_names_the_manifest_once_and_the_ways_out() {
    let env = Env::new("openwrk-ux-");
    // Offline: every connection goes to a proxy that is not there.
    let mut cmd = env.bare(&["serve", "--check", "--json", "--workspace"]);
    cmd.arg(env.path().join("ws"))
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "")
        .env("OPENWRK_RETRY_BACKOFF_MS", "5");
    let (status, stdout, stderr) = run_to_end(cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{stderr}");
    let url = "https://github.com/different-ai/openwork/releases/download/openwrk-v";
    assert_eq!(stderr.matches(url).count(), 1, "{stderr}");
    for flag in [
        "--sidecar-base-url",
        "--sidecar-manifest",
        "--opencode-bin",
        "--opencode-source external",
    ] {
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
    let doc = json(stdout.trim());
    assert_eq!(doc["error"]["exitCode"], 4);
    assert!(doc["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("--sidecar-base-url"));
}

#[test]
fn a_failure_after_the_pairing_document_adds_no_second_one() {
    let env = Env::new("openwrk-ux-");
    let crashing = env.wrapper("standin-opencode", "STANDIN_MODE=crash-after:1s", "");
    let (status, stdout, stderr) = run_to_end(
        env.sidecars("serve", &["--json"], [Some(crashing), None, None]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let doc = one_document(&["serve", "--json"], &stdout);
    assert!(doc["runId"].is_string(), "the pairing details: {doc}");
    assert!(stderr.contains("error: opencode (pid"), "{stderr}");
}
