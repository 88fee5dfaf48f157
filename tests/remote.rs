//! `openwrk approvals` and `openwrk status` against stand-in sidecars started
//! directly on free loopback ports (SPEC §4, §7).

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use openwrk_test_support::standin;
use serde_json::Value;

const HOST_TOKEN: &str = "host-token-for-tests";
const PASSWORD: &str = "opencode-password-for-tests";

/// A stand-in serving on a free port; killed on drop.
struct Standin {
    child: Child,
    url: String,
}

impl Standin {
    fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Standin {
        let mut cmd = Command::new(standin(name));
        cmd.args(args)
            .env_remove("STANDIN_MODE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{name} ended before listening"))
                .unwrap();
            if let Some(i) = line.find("http://127.0.0.1:") {
                let rest = &line[i..];
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Standin { child, url }
    }

    fn openwork() -> Standin {
        Standin::start(
            "standin-openwork-server",
            &["--host", "127.0.0.1", "--port", "0"],
            &[
                ("OPENWORK_HOST_TOKEN", HOST_TOKEN),
                ("OPENWORK_TOKEN", "client-token"),
            ],
        )
    }

    fn opencode() -> Standin {
        Standin::start(
            "standin-opencode",
            &["serve", "--hostname", "127.0.0.1", "--port", "0"],
            &[("OPENCODE_SERVER_PASSWORD", PASSWORD)],
        )
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openwrk …` with a hermetic environment plus `env`.
fn openwrk(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OPENWRK_") || k.starts_with("OPENCODE_") || k.starts_with("OPENWORK_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir")
        .arg(data.path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn approvals_list_and_reply_against_the_openwork_standin() {
    let ow = Standin::openwork();
    let env = [
        ("OPENWRK_OPENWORK_URL", ow.url.as_str()),
        ("OPENWRK_HOST_TOKEN", HOST_TOKEN),
    ];
    let out = openwrk(&["approvals", "list", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let items = stdout_json(&out)["items"].as_array().unwrap().clone();
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ap_1", "ap_2"]);
    let out = openwrk(&["approvals", "list"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.contains("ap_1") && text.contains("Write README.md"),
        "{text}"
    );

    let out = openwrk(&["approvals", "reply", "ap_1", "--allow"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "allowed ap_1");
    // Flags work as well as the env vars.
    let out = openwrk(
        &[
            "approvals",
            "reply",
            "ap_2",
            "--deny",
            "--json",
            "--openwork-url",
            &ow.url,
            "--host-token",
            HOST_TOKEN,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout_json(&out)["allowed"], false);
    let out = openwrk(&["approvals", "list", "--json"], &env);
    assert_eq!(stdout_json(&out)["items"], Value::Array(vec![]));

    let out = openwrk(&["approvals", "reply", "ap_9", "--allow"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no pending approval ap_9") && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");

    let bad = [
        ("OPENWRK_OPENWORK_URL", ow.url.as_str()),
        ("OPENWRK_HOST_TOKEN", "wrong"),
    ];
    let out = openwrk(&["approvals", "list"], &bad);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&ow.url) && err.contains("HTTP 401"), "{err}");
    assert!(err.contains("hint:") && !err.contains("wrong"), "{err}");

    let dead = dead_url();
    let out = openwrk(
        &["approvals", "list"],
        &[
            ("OPENWRK_OPENWORK_URL", &dead),
            ("OPENWRK_HOST_TOKEN", HOST_TOKEN),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the OpenWork server at {dead}")),
        "{err}"
    );

    let out = openwrk(
        &["approvals", "list"],
        &[("OPENWRK_HOST_TOKEN", HOST_TOKEN)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--openwork-url"));
    let out = openwrk(&["approvals", "reply", "ap_1"], &env);
    assert_eq!(
        out.status.code(),
        Some(2),
        "neither --allow nor --deny: {}",
        show(&out)
    );
}

#[test]
fn status_reports_health_version_and_latency() {
    let (ow, oc) = (Standin::openwork(), Standin::opencode());
    let creds = [("OPENWRK_OPENCODE_PASSWORD", PASSWORD)];
    let urls = [
        "status",
        "--openwork-url",
        &ow.url,
        "--opencode-url",
        &oc.url,
    ];
    let out = openwrk(&urls, &creds);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("healthy").count(), 2, "{text}");
    assert!(
        text.contains("version 0.0.0-standin") && text.contains(" ms"),
        "{text}"
    );

    let mut json_args = urls.to_vec();
    json_args.push("--json");
    let doc = stdout_json(&openwrk(&json_args, &creds));
    assert_eq!(doc["healthy"], true, "{doc}");
    for k in ["openwork", "opencode"] {
        assert_eq!(doc[k]["healthy"], true, "{doc}");
        assert_eq!(doc[k]["version"], "0.0.0-standin", "{doc}");
        assert!(doc[k]["latencyMs"].is_u64(), "{doc}");
    }

    // Wrong OpenCode password: unhealthy, exit 1, and the hint says why.
    let out = openwrk(&json_args, &[("OPENWRK_OPENCODE_PASSWORD", "nope")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let doc = stdout_json(&out);
    assert_eq!(
        (doc["healthy"].clone(), doc["openwork"]["healthy"].clone()),
        (false.into(), true.into())
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("OPENWRK_OPENCODE_PASSWORD"),
        "{err}"
    );

    let dead = dead_url();
    let out = openwrk(&["status", "--openwork-url", &dead, "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let doc = stdout_json(&out);
    assert_eq!(doc["openwork"]["error"], "connection refused", "{doc}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dead));

    let out = openwrk(&["status"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = openwrk(&["status", "--opencode-url", "not a url"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}
