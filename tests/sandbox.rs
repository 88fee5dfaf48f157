//! Sandbox mode (SPEC §5.9) through the real `openwrk` binary:
//! - bwrap with the stand-ins (fast) and with the real OpenCode
//!   (`OPENWRK_TEST_OPENCODE_BIN`): a shell command run through OpenCode's
//!   API sees the workspace and nothing of the host HOME or the data dir;
//! - docker, podman and Apple's `container` against a recording stand-in CLI
//!   (`standin-container-cli`): the exact argv, env names, cleanup calls;
//!   a real run when the tool's engine answers on this machine;
//! - the allowlist and blocked-pattern rules end to end (exit 2).
//!
//! Under `CI=true` a test that needs bwrap or the real OpenCode fails when
//! they are missing (.ci/run installs both); locally it skips, saying why.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openwrk_test_support::{processes_under, standin};
use serde_json::Value;

use openwrk_test_support::prerequisite as need;

fn bwrap_present() -> bool {
    Path::new("/usr/bin/bwrap").exists()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bwrap").is_file()))
}

use openwrk_test_support::real_opencode;

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("openwrk-sandbox-")
            .tempdir()
            .unwrap();
        for d in ["ws", "bin", "config/openwrk"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        Env { tmp }
    }

    fn path(&self) -> PathBuf {
        self.tmp.path().canonicalize().unwrap()
    }

    fn ws(&self) -> PathBuf {
        self.path().join("ws")
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    fn record_file(&self) -> PathBuf {
        self.path().join("calls.jsonl")
    }

    /// `docker`, `podman`, `container` → the recording stand-in, in `bin/`.
    fn fake_tools(&self) {
        for tool in ["docker", "podman", "container"] {
            let link = self.path().join("bin").join(tool);
            if !link.exists() {
                std::os::unix::fs::symlink(standin("standin-container-cli"), link).unwrap();
            }
        }
    }

    /// PATH with the fake tools first (and bwrap etc. after).
    fn path_var(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.path().join("bin")];
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).unwrap()
    }

    fn allow(&self, dirs: &[&Path]) {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        std::fs::write(
            self.path().join("config/openwrk/sandbox-allowlist.json"),
            serde_json::json!({ "allow": list }).to_string(),
        )
        .unwrap();
    }

    /// `openwrk serve …` with stand-ins (OpenCode: `opencode` or the stand-in),
    /// a hermetic environment and this test's config dir.
    fn serve(&self, args: &[&str], opencode: Option<&Path>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        for (k, _) in std::env::vars() {
            let ours = [
                "OPENWRK_",
                "STANDIN_",
                "OPENCODE_",
                "OPENWORK_",
                "OWPENBOT_",
            ];
            if ours.iter().any(|p| k.starts_with(p)) || k == "NO_COLOR" {
                cmd.env_remove(k);
            }
        }
        let oc = opencode.map_or_else(|| standin("standin-opencode"), Path::to_path_buf);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data())
            .args(if args.contains(&"--workspace") {
                vec![]
            } else {
                vec!["--workspace".into(), self.ws().into_os_string()]
            })
            .arg("--opencode-bin")
            .arg(oc)
            .arg("--openwork-server-bin")
            .arg(standin("standin-openwork-server"))
            .arg("--no-owpenbot")
            .arg("--allow-external")
            .args(["--color", "never", "--openwork-port", "0"])
            .args(args)
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("PATH", self.path_var())
            .env("STANDIN_CONTAINER_RECORD", self.record_file())
            .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
            .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// The stand-in CLI's calls so far.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.record_file())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_no_processes(&self, within: Duration) -> Vec<(u32, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = processes_under(&self.path());
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (pid, _) in processes_under(&self.path()) {
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

fn argv_text(call: &Value) -> String {
    call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Live processes whose environment holds `OPENWRK_RUN_ID=<run id>`: what
/// runs inside a sandbox (its command line names no test path).
fn processes_of_run(run_id: &str) -> Vec<(u32, String)> {
    let needle = format!("OPENWRK_RUN_ID={run_id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

/// A running openwrk whose output is collected line by line.
struct Run {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect<R: std::io::Read + Send + 'static>(r: R) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Run {
    fn start(mut cmd: Command) -> Run {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Run {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The pairing JSON (`--json`) once ready.
    fn pairing(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("\"runId\""))
            {
                return serde_json::from_str(l).unwrap();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "openwrk exited ({status:?}) before ready:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "openwrk did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One request to OpenCode with basic auth; status and JSON body.
fn opencode(url: &str, password: &str, method: &str, body: Option<Value>) -> (u16, Value) {
    openwrk::install_crypto_provider();
    block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let mut req = client
            .request(method.parse().unwrap(), url)
            .basic_auth("opencode", Some(password));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

// ------------------------------------------------------------------ bwrap

#[test]
fn bwrap_check_with_standins_reports_the_sandbox_and_leaves_nothing() {
    if !need("bwrap", "bubblewrap (bwrap)", bwrap_present()) {
        return;
    }
    let env = Env::new();
    let out = env
        .serve(
            &[
                "--check",
                "--json",
                "--sandbox",
                "auto",
                "--run-id",
                "sbx-auto",
            ],
            None,
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["sandbox"]["mode"], "bwrap", "{p}");
    let id = openwrk::host::workspaces::workspace_id(&env.ws());
    assert_eq!(
        p["sandbox"]["persistDir"],
        env.data().join("sandbox").join(&id).display().to_string()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--sandbox auto: using bwrap"), "{stderr}");
    assert!(env.data().join("sandbox").join(&id).is_dir());
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
    assert!(processes_of_run("sbx-auto").is_empty());
    // Without --sandbox the pairing says so.
    let out = env.serve(&["--check", "--json"], None).output().unwrap();
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["sandbox"]["mode"], "none", "{p}");
}

/// A file in the operator's real HOME, removed on drop.
struct HomeProbe(PathBuf);

impl HomeProbe {
    fn new(name: &str, content: &str) -> HomeProbe {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
        let path = home.join(format!(".openwrk-sandbox-{name}-{}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        HomeProbe(path)
    }
}

impl Drop for HomeProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The output of `command` run through OpenCode's shell API (no model needed).
fn shell(url: &str, password: &str, session: &str, command: &str) -> String {
    let (status, answer) = opencode(
        &format!("{url}/session/{session}/shell"),
        password,
        "POST",
        Some(serde_json::json!({ "agent": "build", "command": command })),
    );
    assert_eq!(status, 200, "{answer}");
    answer["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("no parts: {answer}"))
        .iter()
        .filter(|p| p["type"] == "tool")
        .map(|p| {
            p["state"]["output"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bwrap_with_the_real_opencode_confines_the_agents_commands() {
    let Some(bin) = real_opencode() else {
        return;
    };
    if !need("bwrap", "bubblewrap (bwrap)", bwrap_present()) {
        return;
    }
    let env = Env::new();
    std::fs::write(env.ws().join("inside.txt"), "workspace-content").unwrap();
    std::fs::create_dir_all(env.data()).unwrap();
    std::fs::write(env.data().join("data-secret.txt"), "data-dir-secret").unwrap();
    let home_secret = HomeProbe::new("read", "host-home-secret");
    let home_write = HomeProbe::new("write", "");
    std::fs::remove_file(&home_write.0).unwrap();

    // --check passes in the sandbox with the real binary.
    let out = env
        .serve(
            &[
                "--check",
                "--json",
                "--sandbox",
                "bwrap",
                "--startup-timeout",
                "120",
            ],
            Some(&bin),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["sandbox"]["mode"], "bwrap");
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());

    let run_id = format!("sbx-real-{}", std::process::id());
    let mut run = Run::start(env.serve(
        &[
            "--json",
            "--sandbox",
            "bwrap",
            "--startup-timeout",
            "120",
            "--run-id",
            &run_id,
        ],
        Some(&bin),
    ));
    let p = run.pairing(Duration::from_secs(150));
    let url = p["opencode"]["url"].as_str().unwrap().to_string();
    let password = p["opencode"]["password"].as_str().unwrap().to_string();
    let (status, session) = opencode(
        &format!("{url}/session"),
        &password,
        "POST",
        Some(serde_json::json!({})),
    );
    assert_eq!(status, 200, "{session}");
    let session = session["id"].as_str().unwrap().to_string();

    // The workspace: readable and writable.
    let out = shell(
        &url,
        &password,
        &session,
        "cat inside.txt; echo written-inside > made.txt; pwd",
    );
    assert!(out.contains("workspace-content"), "{out}");
    assert!(out.contains(&env.ws().display().to_string()), "{out}");
    assert_eq!(
        std::fs::read_to_string(env.ws().join("made.txt"))
            .unwrap()
            .trim(),
        "written-inside"
    );

    // The host HOME and the data dir: not readable.
    let out = shell(
        &url,
        &password,
        &session,
        &format!(
            "cat {}; cat {}; ls {}; echo HOME=$HOME",
            home_secret.0.display(),
            env.data().join("data-secret.txt").display(),
            home_secret.0.parent().unwrap().display()
        ),
    );
    assert!(!out.contains("host-home-secret"), "{out}");
    assert!(!out.contains("data-dir-secret"), "{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(out.contains("HOME=/openwrk/home"), "{out}");

    // Nothing written outside the workspace reaches the host.
    let outside = env.path().join("outside.txt");
    let in_data = env.data().join("planted.txt");
    let out = shell(
        &url,
        &password,
        &session,
        &format!(
            "echo x > {}; echo x > {}; echo x > {}; echo x > /usr/openwrk-probe; echo x > /etc/openwrk-probe; echo done",
            home_write.0.display(),
            outside.display(),
            in_data.display()
        ),
    );
    assert!(out.contains("done"), "{out}");
    for path in [&home_write.0, &outside, &in_data] {
        assert!(
            !path.exists(),
            "{} was written from the sandbox: {out}",
            path.display()
        );
    }
    assert!(!Path::new("/usr/openwrk-probe").exists());
    assert!(!Path::new("/etc/openwrk-probe").exists());
    assert!(out.contains("Read-only file system"), "{out}");

    // The sandbox runs in its own PID namespace: no host process is visible.
    let out = shell(&url, &password, &session, "ls /proc | grep -c '^[0-9]'");
    let visible: u32 = out.trim().lines().last().unwrap().trim().parse().unwrap();
    assert!(visible < 20, "{visible} processes visible:\n{out}");

    // SIGKILL of openwrk: nothing of the sandbox survives.
    assert!(
        !processes_of_run(&run_id).is_empty(),
        "the sandbox is found by its run id"
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGKILL);
    }
    run.wait(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_of_run(&run_id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        processes_of_run(&run_id).is_empty(),
        "{:?}",
        processes_of_run(&run_id)
    );
    assert!(env.wait_no_processes(Duration::from_secs(2)).is_empty());
}

// ------------------------------------------------------------------ containers

fn find_call(calls: &[Value], pred: impl Fn(&str) -> bool) -> Option<&Value> {
    calls.iter().find(|c| pred(&argv_text(c)))
}

#[test]
fn docker_podman_and_container_argv_against_a_recording_cli() {
    for (tool, remove) in [
        ("docker", "rm -f"),
        ("podman", "rm -f"),
        ("container", "delete --force"),
    ] {
        let env = Env::new();
        env.fake_tools();
        let run_id = format!("sbx-{tool}-1");
        let out = env
            .serve(
                &[
                    "--check",
                    "--json",
                    "--sandbox",
                    tool,
                    "--run-id",
                    &run_id,
                    "--sandbox-image",
                    "example/base:1",
                ],
                None,
            )
            .env("ANTHROPIC_API_KEY", "sk-ant-test-value")
            .env("GITHUB_TOKEN", "ghp-never-passed")
            .env("SSH_AUTH_SOCK", "/tmp/agent.sock")
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool}: {}", show(&out));
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        let name = format!("openwrk-{run_id}");
        assert_eq!(p["sandbox"]["mode"], tool, "{p}");
        assert_eq!(p["sandbox"]["name"], name.as_str(), "{p}");
        assert_eq!(p["sandbox"]["image"], "example/base:1", "{p}");
        let port = p["opencode"]["url"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        let password = p["opencode"]["password"].as_str().unwrap().to_string();
        let calls = env.calls();
        let all = calls.iter().map(argv_text).collect::<Vec<_>>().join("\n");
        // The engine is asked first, then the image must run the binary.
        let first = argv_text(&calls[0]);
        assert!(
            first.starts_with("version") || first == "system status",
            "{all}"
        );
        let trial = find_call(&calls, |a| a.contains(&format!("--name {name}-trial")))
            .unwrap_or_else(|| panic!("{all}"));
        assert!(
            argv_text(trial).ends_with("example/base:1 --version"),
            "{all}"
        );
        let run = find_call(&calls, |a| {
            a.starts_with("run") && a.contains(&format!("--name {name} "))
        })
        .unwrap_or_else(|| panic!("{all}"));
        let argv = argv_text(run);
        let ws = env.ws().display().to_string();
        let persist = env
            .data()
            .join("sandbox")
            .join(openwrk::host::workspaces::workspace_id(&env.ws()));
        let standin = standin("standin-opencode");
        let binary_mount = if tool == "container" {
            format!(
                "type=bind,source={},target=/openwrk/bin,readonly",
                standin.parent().unwrap().display()
            )
        } else {
            format!(
                "type=bind,source={},target=/openwrk/bin/opencode,readonly",
                standin.display()
            )
        };
        for part in [
            "run --rm --name".to_string(),
            binary_mount,
            format!("-p 127.0.0.1:{port}:{port}"),
            format!("--mount type=bind,source={ws},target={ws} "),
            format!(
                "--mount type=bind,source={},target=/openwrk/home ",
                persist.display()
            ),
            format!("-w {ws}"),
            "-e HOME=/openwrk/home".into(),
            "-e OPENCODE_SERVER_PASSWORD ".into(),
            "-e ANTHROPIC_API_KEY ".into(),
            format!("example/base:1 serve --hostname 0.0.0.0 --port {port}"),
        ] {
            assert!(
                argv.contains(&part),
                "{tool}: {part:?} missing from\n{argv}"
            );
        }
        match tool {
            "docker" => {
                // SAFETY: getuid/getgid cannot fail.
                let user = unsafe { format!("--user {}:{}", libc::getuid(), libc::getgid()) };
                for part in [
                    "--read-only",
                    "--cap-drop ALL",
                    "--security-opt no-new-privileges",
                    "--init",
                    user.as_str(),
                ] {
                    assert!(argv.contains(part), "{part}: {argv}");
                }
            }
            "podman" => assert!(
                argv.contains("--read-only --tmpfs /tmp")
                    && argv.contains("--security-opt label=disable"),
                "{argv}"
            ),
            _ => assert!(
                argv.contains("--entrypoint /openwrk/bin/standin-opencode"),
                "{argv}"
            ),
        }
        // No secret value in any argv; the container got them by name.
        for secret in [password.as_str(), "sk-ant-test-value", "ghp-never-passed"] {
            assert!(!all.contains(secret), "{tool}: {secret} in argv:\n{all}");
        }
        let names: Vec<&str> = run["envNames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for n in [
            "OPENCODE_SERVER_PASSWORD",
            "ANTHROPIC_API_KEY",
            "HOME",
            "OPENWRK_RUN_ID",
            "OPENCODE_DISABLE_AUTOUPDATE",
        ] {
            assert!(names.contains(&n), "{tool}: {n} not passed: {names:?}");
        }
        for n in [
            "GITHUB_TOKEN",
            "SSH_AUTH_SOCK",
            "OPENWRK_SANDBOX_CLEANUP",
            "STANDIN_CONTAINER_RECORD",
        ] {
            assert!(!names.contains(&n), "{tool}: {n} passed: {names:?}");
        }
        // Removed at --check completion.
        assert!(
            all.contains(&format!("{remove} {name}\n"))
                || all.ends_with(&format!("{remove} {name}")),
            "{tool}:\n{all}"
        );
        assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
    }
}

#[test]
fn sigkill_of_openwrk_and_openwrk_stop_remove_the_container() {
    let env = Env::new();
    env.fake_tools();
    let mut run = Run::start(env.serve(
        &["--json", "--sandbox", "docker", "--run-id", "sbx-kill"],
        None,
    ));
    run.pairing(Duration::from_secs(30));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGKILL);
    }
    run.wait(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    let removed = |env: &Env, name: &str| {
        env.calls()
            .iter()
            .any(|c| argv_text(c) == format!("rm -f {name}"))
    };
    while !removed(&env, "openwrk-sbx-kill") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        removed(&env, "openwrk-sbx-kill"),
        "the guardian removes the container: {:?}",
        env.calls()
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());

    // A detached run: `openwrk stop` removes it (and says nothing is left).
    let out = env
        .serve(
            &[
                "--detach",
                "--json",
                "--sandbox",
                "docker",
                "--run-id",
                "sbx-detached",
            ],
            None,
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["sandbox"]["name"], "openwrk-sbx-detached");
    let before = env.calls().len();
    let stop = Command::new(env!("CARGO_BIN_EXE_openwrk"))
        .args(["stop", "--run-id", "sbx-detached", "--data-dir"])
        .arg(env.data())
        .env("PATH", env.path_var())
        .env("STANDIN_CONTAINER_RECORD", env.record_file())
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", show(&stop));
    let after: Vec<String> = env.calls()[before..].iter().map(argv_text).collect();
    assert!(
        after.iter().any(|a| a == "rm -f openwrk-sbx-detached"),
        "{after:?}"
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
}

#[test]
fn an_image_that_cannot_run_the_binary_and_a_stopped_engine_say_so() {
    let env = Env::new();
    env.fake_tools();
    let out = env
        .serve(
            &[
                "--check",
                "--sandbox",
                "docker",
                "--sandbox-image",
                "alpine:3",
            ],
            None,
        )
        .env("STANDIN_CONTAINER_BAD_IMAGE", "alpine:3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the image alpine:3 cannot run the verified OpenCode binary"),
        "{err}"
    );
    assert!(err.contains("glibc"), "{err}");
    let out = env
        .serve(&["--check", "--sandbox", "podman"], None)
        .env("STANDIN_CONTAINER_ENGINE", "down")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("podman is installed but its engine does not answer"),
        "{err}"
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
}

#[test]
fn a_missing_tool_names_what_to_install() {
    let env = Env::new();
    for (mode, hint) in [
        ("podman", "install Podman"),
        ("docker", "install Docker"),
        ("bwrap", "apt-get install bubblewrap"),
        ("auto", "install one of them"),
    ] {
        let out = env
            .serve(&["--check", "--sandbox", mode], None)
            .env("PATH", env.path().join("bin"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{mode}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(hint), "{mode}: {err}");
    }
}

#[test]
fn real_docker_or_podman_when_their_engine_answers() {
    let Some(bin) = real_opencode() else {
        return;
    };
    let mut ran = false;
    for tool in ["docker", "podman"] {
        let answers = Command::new(tool)
            .arg("version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !answers {
            println!("skipped {tool}: not installed or its engine does not answer on this machine");
            continue;
        }
        ran = true;
        let env = Env::new();
        let out = env
            .serve(
                &[
                    "--check",
                    "--json",
                    "--sandbox",
                    tool,
                    "--startup-timeout",
                    "180",
                ],
                Some(&bin),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool}: {}", show(&out));
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        let name = p["sandbox"]["name"].as_str().unwrap().to_string();
        let ps = Command::new(tool)
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
            "{tool}: {name} left behind"
        );
    }
    if !ran {
        println!("skipped: no container engine answers here (a docker client without an engine counts as absent)");
    }
}

// ------------------------------------------------------------------ mounts

#[test]
fn extra_mounts_follow_the_allowlist_and_the_blocked_patterns() {
    let env = Env::new();
    env.fake_tools();
    let shared = env.path().join("shared");
    std::fs::create_dir_all(shared.join("docs")).unwrap();
    std::fs::create_dir_all(shared.join("keys/.ssh")).unwrap();
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let refused = |mount: &str, rule: &str| {
        let out = env
            .serve(
                &["--check", "--sandbox", "docker", "--sandbox-mount", mount],
                None,
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{mount}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        // The message names the mount and the rule.
        assert!(err.contains(mount), "{err}");
        assert!(err.contains(rule), "{mount}: {rule} not in {err}");
    };
    // No allowlist file: nothing may be mounted.
    refused(
        &format!("{}:/docs", shared.join("docs").display()),
        "there is no allowlist file",
    );
    env.allow(&[&shared]);
    refused(&format!("{}:/x", outside.display()), "rule `allowlist`");
    refused(
        &format!("{}:/x", shared.join("keys/.ssh").display()),
        "rule `blocked pattern .ssh`",
    );
    refused(
        &format!("{}:/x", shared.join("keys").display()),
        "rule `blocked pattern .ssh` (in the subtree)",
    );
    refused(
        &format!("{}:/openwrk/x", shared.join("docs").display()),
        "rule `reserved path`",
    );
    refused(
        &format!("{}:/x:rx", shared.join("docs").display()),
        "unknown mode",
    );

    // Allowed: read-only by default, rw on request; the env var is comma-separated.
    let docs = shared.join("docs");
    let out_dir = shared.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = env
        .serve(&["--check", "--json", "--sandbox", "docker"], None)
        .env(
            "OPENWRK_SANDBOX_MOUNTS",
            format!("{}:/docs,{}:/out:rw", docs.display(), out_dir.display()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["sandbox"]["mounts"].as_array().unwrap().len(), 2, "{p}");
    let run = env
        .calls()
        .into_iter()
        .map(|c| argv_text(&c))
        .find(|a| a.starts_with("run") && a.contains(" serve "))
        .unwrap();
    assert!(
        run.contains(&format!(
            "--mount type=bind,source={},target=/docs,readonly",
            docs.display()
        )),
        "{run}"
    );
    assert!(
        run.contains(&format!(
            "--mount type=bind,source={},target=/out ",
            out_dir.display()
        )),
        "{run}"
    );
}

#[test]
fn a_workspace_that_holds_the_host_home_or_credentials_is_refused() {
    let env = Env::new();
    env.fake_tools();
    // HOME inside the workspace.
    let out = env
        .serve(&["--check", "--sandbox", "docker"], None)
        .env("HOME", env.ws().join("me"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "HOME must exist to count: {}",
        show(&out)
    );
    std::fs::create_dir_all(env.ws().join("me")).unwrap();
    let out = env
        .serve(&["--check", "--sandbox", "docker"], None)
        .env("HOME", env.ws().join("me"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rule `host HOME`"),
        "{}",
        show(&out)
    );
    // A workspace named like a credentials dir.
    let gnupg = env.path().join(".gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    let out = env
        .serve(
            &[
                "--check",
                "--sandbox",
                "docker",
                "--workspace",
                gnupg.to_str().unwrap(),
            ],
            None,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rule `blocked pattern .gnupg`"),
        "{}",
        show(&out)
    );
}

// ------------------------------------------------------------------ daemon

#[test]
fn the_daemon_sandboxes_its_opencode_and_remounts_when_workspaces_change() {
    let env = Env::new();
    env.fake_tools();
    let openwrk = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        for (k, _) in std::env::vars() {
            if k.starts_with("OPENWRK_") || k.starts_with("STANDIN_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--data-dir")
            .arg(env.data())
            .args(["--color", "never"])
            .args(args)
            .env("PATH", env.path_var())
            .env("STANDIN_CONTAINER_RECORD", env.record_file())
            .stdin(Stdio::null());
        cmd.output().unwrap()
    };
    let a = env.path().join("alpha");
    std::fs::create_dir_all(&a).unwrap();
    let out = openwrk(&["workspace", "add", a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let oc = standin("standin-opencode");
    let out = openwrk(&[
        "daemon",
        "start",
        "--sandbox",
        "docker",
        "--opencode-bin",
        oc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let status = openwrk(&["daemon", "status", "--json"]);
    let doc: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["sandbox"]["mode"], "docker", "{doc}");
    let name = doc["sandbox"]["name"].as_str().unwrap().to_string();
    let runs = |env: &Env| {
        env.calls()
            .iter()
            .map(argv_text)
            .filter(|a| a.starts_with("run") && a.contains(" serve "))
            .collect::<Vec<_>>()
    };
    let first = runs(&env);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].contains(&format!("target={} ", a.display())),
        "{}",
        first[0]
    );
    assert!(first[0].contains("-w /openwrk/home"), "{}", first[0]);
    // The data dir itself is never mounted (only its sandbox/daemon persist dir).
    assert!(
        !first[0].contains(&format!("source={},", env.data().display())),
        "{}",
        first[0]
    );
    assert!(
        first[0].contains(&format!(
            "source={},target=/openwrk/home",
            env.data().join("sandbox/daemon").display()
        )),
        "{}",
        first[0]
    );

    // A new workspace: OpenCode restarts with it mounted.
    let b = env.path().join("beta");
    std::fs::create_dir_all(&b).unwrap();
    let out = openwrk(&["workspace", "add", b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    while runs(&env).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = runs(&env);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now[1].contains(&format!("target={} ", b.display())),
        "{}",
        now[1]
    );
    let text = openwrk(&["daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("sandbox     docker"),
        "{}",
        show(&text)
    );

    let out = openwrk(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", show(&out));
    let calls: Vec<String> = env.calls().iter().map(argv_text).collect();
    assert!(
        calls.iter().any(|c| c == &format!("rm -f {name}")),
        "{calls:?}"
    );
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
}

#[test]
fn status_names_the_sandbox_of_a_detached_run() {
    let env = Env::new();
    env.fake_tools();
    let out = env
        .serve(
            &[
                "--detach",
                "--json",
                "--sandbox",
                "docker",
                "--run-id",
                "sbx-status",
            ],
            None,
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        cmd.args(["status", "--data-dir"])
            .arg(env.data())
            .args(["--opencode-url", p["opencode"]["url"].as_str().unwrap()])
            .env(
                "OPENWRK_OPENCODE_PASSWORD",
                p["opencode"]["password"].as_str().unwrap(),
            );
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = status(true);
    assert!(out.status.success(), "{}", show(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["sandbox"]["mode"], "docker", "{doc}");
    assert_eq!(doc["sandbox"]["name"], "openwrk-sbx-status", "{doc}");
    let out = status(false);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("sandbox: docker, image debian:stable-slim, container openwrk-sbx-status"),
        "{}",
        show(&out)
    );
    let stop = Command::new(env!("CARGO_BIN_EXE_openwrk"))
        .args(["stop", "--run-id", "sbx-status", "--data-dir"])
        .arg(env.data())
        .env("PATH", env.path_var())
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", show(&stop));
    assert!(env.wait_no_processes(Duration::from_secs(3)).is_empty());
}
