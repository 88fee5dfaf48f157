//! Soak: 100 start/stop cycles with the stand-in sidecars leave no process and
//! no temp file; a long-lived daemon keeps its own open file descriptors
//! (`/proc/<daemon pid>/fd`) and its children flat across 100 proxied
//! requests and 100 OpenCode restarts.

#![cfg(target_os = "linux")]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use openwrk_test_support::{processes_under, standin, standin_bin};
use serde_json::Value;

#[test]
fn a_hundred_check_cycles_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let workspace = tmp.path().join("workspace");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&workspace).unwrap();
    for i in 0..100 {
        let o = Command::new(env!("CARGO_BIN_EXE_openwrk"))
            .args([
                "serve",
                "--check",
                "--allow-external",
                "--openwork-port",
                "0",
            ])
            .arg("--opencode-bin")
            .arg(standin_bin("standin-opencode"))
            .arg("--openwork-server-bin")
            .arg(standin_bin("standin-openwork-server"))
            .arg("--owpenbot-bin")
            .arg(standin_bin("standin-owpenbot"))
            .arg("--workspace")
            .arg(&workspace)
            .env("OPENWRK_DATA_DIR", &data)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cycle {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let left = processes_under(&workspace);
    assert!(left.is_empty(), "left running: {left:?}");
    // No temp files in the data dir (owpenbot's data dir is the only thing a run may leave).
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp") && !name.contains(".part-"),
                "temp file left: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// `openwrk …` for the daemon soak, hermetic, with this data dir.
fn openwrk(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
    for (k, _) in std::env::vars() {
        if ["OPENWRK_", "STANDIN_", "OPENCODE_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--color", "never"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The daemon's `status --json` (exit status aside: unhealthy is fine here).
fn status(data: &Path) -> Value {
    let o = openwrk(data, &["daemon", "status", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// One plain HTTP/1.1 request to the daemon; returns the status code.
fn get(base: &str, path: &str, token: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The daemon's open file descriptors and its zombie children.
fn fds_and_zombies(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let f: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str())
        })
        .count();
    (fds, zombies)
}

/// Polls the daemon's status until `done` holds (bounded).
fn wait_status(data: &Path, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(data);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_long_lived_daemon_keeps_its_descriptors_across_restarts_and_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ws = tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    // OpenCode crashes shortly after starting while the `crash` file exists.
    let crash = tmp.path().join("crash");
    let wrapper = tmp.path().join("opencode.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then export STANDIN_MODE=crash-after:50ms; fi\nexec '{}' \"$@\"\n",
            crash.display(),
            standin("standin-opencode").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = ok(&openwrk(
        &data,
        &[
            "daemon",
            "start",
            "--opencode-bin",
            wrapper.to_str().unwrap(),
        ],
    )
    // Test-only: restart after 1 ms (doubling to 30 ms) instead of 1 s.
    .env("OPENWRK_TEST_RESTART_DELAY_MS", "1")
    .output()
    .unwrap());
    let token = std::fs::read_to_string(data.join("daemon.token")).unwrap();
    let token = token.trim();
    let id = ok(&openwrk(&data, &["workspace", "add", ws.to_str().unwrap()])
        .output()
        .unwrap());
    let pid = status(&data)["pid"].as_u64().unwrap() as u32;
    let proxied = format!("/w/{id}/global/health");
    for _ in 0..5 {
        assert_eq!(get(&url, &proxied, token), 200);
    }
    let (fds_before, _) = fds_and_zombies(pid);

    for i in 0..100 {
        assert_eq!(get(&url, &proxied, token), 200, "request {i}");
    }
    let (fds, zombies) = fds_and_zombies(pid);
    assert!(
        fds <= fds_before + 2,
        "100 requests: fds grew from {fds_before} to {fds}"
    );
    assert_eq!(zombies, 0);

    std::fs::write(&crash, "").unwrap();
    let old = status(&data)["opencode"]["pid"].as_u64().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(old as i32, libc::SIGKILL);
    }
    wait_status(&data, Duration::from_secs(120), |s| {
        s["opencode"]["restarts"].as_u64().unwrap_or(0) >= 100
    });
    std::fs::remove_file(&crash).unwrap();
    // Healthy twice, 300 ms apart, with the same OpenCode: one started after
    // the crash switch was removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let first = wait_status(&data, Duration::from_secs(30), |s| s["healthy"] == true);
        std::thread::sleep(Duration::from_millis(300));
        let again = status(&data);
        if again["healthy"] == true && again["opencode"]["pid"] == first["opencode"]["pid"] {
            break again;
        }
        assert!(Instant::now() < deadline, "OpenCode never settled: {again}");
    };
    assert_eq!(
        s["pid"].as_u64(),
        Some(u64::from(pid)),
        "the daemon survived"
    );
    assert_eq!(get(&url, &proxied, token), 200);
    let (fds, zombies) = fds_and_zombies(pid);
    assert!(
        fds <= fds_before + 2,
        "100 restarts: fds grew from {fds_before} to {fds}"
    );
    assert_eq!(zombies, 0, "the daemon left zombies");
    // The daemon, OpenCode's guardian and OpenCode: nothing else accumulated.
    let running = processes_under(tmp.path());
    assert_eq!(running.len(), 3, "{running:?}");

    ok(&openwrk(&data, &["daemon", "stop"]).output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_under(tmp.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            processes_under(tmp.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
