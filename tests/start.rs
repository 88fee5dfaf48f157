//! `openwrk serve` / `start` / `stop` (the real binary) supervising the
//! stand-in sidecars of test-support (SPEC §5, §7, §8). Every test has its own
//! temp dir; a process whose working directory or command line is inside it
//! belongs to that test, which is how "no child left" is checked.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openwrk_test_support::{processes_matching, processes_under, standin};
use serde_json::Value;

/// A test's private directory: workspace, data dir, wrapper scripts.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("openwrk-start-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(tmp.path().join("ws")).unwrap();
        Env { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// A script that runs a stand-in with extra environment (and maybe a line
    /// of shell first), so one sidecar can misbehave while the others do not.
    fn wrapper(&self, name: &str, env: &str, before: &str) -> PathBuf {
        let path = self.path().join(format!("{name}.sh"));
        let script = format!(
            "#!/bin/sh\n{before}\n{env} exec '{}' \"$@\"\n",
            standin(name).display()
        );
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `openwrk <command> …` with the three stand-ins and a hermetic environment.
    fn openwrk(&self, command: &str, args: &[&str]) -> Command {
        self.openwrk_with(command, args, [None, None, None])
    }

    fn openwrk_with(&self, command: &str, args: &[&str], bins: [Option<PathBuf>; 3]) -> Command {
        let [oc, ow, bot] = bins;
        let oc = oc.unwrap_or_else(|| standin("standin-opencode"));
        let ow = ow.unwrap_or_else(|| standin("standin-openwork-server"));
        let bot = bot.unwrap_or_else(|| standin("standin-owpenbot"));
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
        cmd.arg(command)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--workspace")
            .arg(self.path().join("ws"))
            .arg("--opencode-bin")
            .arg(oc)
            .arg("--openwork-server-bin")
            .arg(ow)
            .arg("--owpenbot-bin")
            .arg(bot)
            .arg("--allow-external")
            .args(["--color", "never"])
            .args(args)
            .stdin(Stdio::null());
        if !args.contains(&"--openwork-port") {
            // Parallel tests must not race for the default 8787.
            cmd.args(["--openwork-port", "0"]);
        }
        cmd
    }

    /// `openwrk stop …` for this test's data dir.
    fn stop(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        cmd.env_remove("OPENWRK_RUN_ID")
            .arg("stop")
            .arg("--data-dir")
            .arg(self.data())
            .stdin(Stdio::null());
        cmd
    }

    /// Live processes that belong to this test.
    fn processes(&self) -> Vec<(u32, String)> {
        processes_under(self.path())
    }

    /// This test's stand-in sidecars.
    fn sidecars(&self) -> Vec<(u32, String)> {
        let mut found = self.processes();
        found.retain(|(_, cmdline)| {
            cmdline
                .split(' ')
                .next()
                .is_some_and(|argv0| argv0.contains("standin-"))
        });
        found
    }

    /// Waits until none of this test's processes is left; returns the leftovers.
    fn wait_no_processes(&self, within: Duration) -> Vec<(u32, String)> {
        let deadline = Instant::now() + within;
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A failed test must not leak stand-ins into the next ones.
        for (pid, _) in self.processes() {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
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
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
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

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn wait_line(&self, on_stderr: bool, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let lines = if on_stderr {
            &self.stderr
        } else {
            &self.stdout
        };
        loop {
            if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {within:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pairing JSON (`--json`) once openwrk is ready.
    fn wait_pairing(&self) -> Value {
        let line = self.wait_line(false, "\"runId\"", Duration::from_secs(20));
        serde_json::from_str(&line).unwrap()
    }

    fn signal(&self, sig: i32) {
        signal(self.child.id(), sig);
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "openwrk did not exit within {within:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
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

fn run_to_end(cmd: Command, within: Duration) -> (ExitStatus, String, String) {
    let mut run = Run::start(cmd);
    let status = run.wait(within);
    (status, run.stdout(), run.stderr())
}

fn assert_nothing_left(env: &Env) {
    let left = env.wait_no_processes(Duration::from_secs(3));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn check_json_prints_pairing_and_leaves_nothing() {
    let env = Env::new();
    let (status, stdout, stderr) = run_to_end(
        env.openwrk("serve", &["--check", "--json", "--run-id", "happy-1"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{status:?}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON document on stdout:\n{stdout}");
    let p: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(p["runId"], "happy-1");
    let ws = env.path().join("ws").canonicalize().unwrap();
    assert_eq!(p["workspace"], ws.display().to_string());
    for url in [&p["openwork"]["url"], &p["opencode"]["url"]] {
        assert!(
            url.as_str().unwrap().starts_with("http://127.0.0.1:"),
            "{p}"
        );
    }
    for token in [
        &p["openwork"]["token"],
        &p["openwork"]["hostToken"],
        &p["opencode"]["password"],
    ] {
        assert!(token.as_str().unwrap().len() >= 22, "≥128 bits: {p}");
    }
    assert_eq!(p["opencode"]["username"], "opencode");
    assert_eq!(p["opencode"]["version"], "0.0.0-standin");
    assert_eq!(p["owpenbot"]["enabled"], true);
    assert!(p["owpenbot"]["healthPort"].as_u64().unwrap() > 0);
    assert!(p["attach"].as_str().unwrap().contains(&format!(
        "opencode attach {}",
        p["opencode"]["url"].as_str().unwrap()
    )));
    assert!(stderr.contains("check passed"), "{stderr}");
    assert!(env.processes().is_empty(), "{:?}", env.processes());
}

#[test]
fn opencode_exiting_at_startup_is_named_with_status_and_lines() {
    let env = Env::new();
    let mut cmd = env.openwrk("serve", &["--check"]);
    cmd.env("STANDIN_MODE", "exit:3");
    let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: opencode exited during startup (exit status 3)"),
        "{stderr}"
    );
    assert!(stderr.contains("last 1 log lines of opencode"), "{stderr}");
    assert!(
        stderr.contains("STANDIN_MODE=exit:3, exiting before listening"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert_nothing_left(&env);
}

#[test]
fn a_sidecar_that_cannot_be_executed_is_named_with_the_os_error() {
    let env = Env::new();
    // The guardian starts the sidecar: its exec error still reaches the user.
    let bin = env.path().join("not-executable");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    let (status, _, stderr) = run_to_end(
        env.openwrk_with("serve", &["--check"], [Some(bin.clone()), None, None]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot start opencode: {}: Permission denied",
            bin.display()
        )),
        "{stderr}"
    );
    assert_nothing_left(&env);
}

#[test]
fn never_healthy_opencode_times_out_and_everything_stops() {
    let env = Env::new();
    let mut cmd = env.openwrk("serve", &["--check", "--startup-timeout", "2"]);
    cmd.env("STANDIN_MODE", "never-healthy");
    let started = Instant::now();
    let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        stderr.contains("error: opencode did not become healthy within 2 s"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert_nothing_left(&env);
}

#[test]
fn openwork_server_crashing_stops_the_run() {
    let env = Env::new();
    let ow = env.wrapper("standin-openwork-server", "STANDIN_MODE=crash-after:1s", "");
    let mut run = Run::start(env.openwrk_with("serve", &["--json"], [None, Some(ow), None]));
    run.wait_pairing();
    let status = run.wait(Duration::from_secs(20));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: openwork-server (pid")
            && stderr.contains("exited (exit status 1); stopped everything"),
        "{stderr}"
    );
    assert!(stderr.contains("crashing with exit code 1"), "{stderr}");
    assert_nothing_left(&env);
}

/// SPEC §5.1: OpenCode and the OpenWork server start together (the OpenWork
/// server does not wait for OpenCode to be healthy); owpenbot only once
/// OpenCode is healthy. OpenCode is made slow so the order is unambiguous.
#[test]
fn opencode_and_the_openwork_server_start_together_owpenbot_after() {
    let env = Env::new();
    let oc = env.wrapper("standin-opencode", "STANDIN_MODE=slow-start:2s", "");
    let (status, stdout, stderr) = run_to_end(
        env.openwrk_with("serve", &["--check", "--json"], [Some(oc), None, None]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{status:?}\n{stderr}");
    let pairing: Value = serde_json::from_str(stdout.trim()).unwrap();
    let at = |needle: &str| {
        stderr
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stderr}"))
    };
    let ow_listening = at("listening on http://127.0.0.1:");
    let ow_healthy = at("openwork-server is healthy at");
    let oc_healthy = at("opencode is healthy at");
    let bot_listening = at("owpenbot (standin) health server listening");
    assert!(
        stderr[ow_listening..].starts_with(&format!(
            "listening on {}",
            pairing["openwork"]["url"].as_str().unwrap()
        )),
        "the first listener is the OpenWork server:\n{stderr}"
    );
    assert!(
        ow_listening < oc_healthy && ow_healthy < oc_healthy,
        "the OpenWork server started and was healthy before OpenCode was:\n{stderr}"
    );
    assert!(
        oc_healthy < bot_listening,
        "owpenbot after OpenCode:\n{stderr}"
    );
    assert_nothing_left(&env);
}

#[test]
fn a_busy_explicit_port_fails_before_anything_starts() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, _, stderr) = run_to_end(
        env.openwrk("serve", &["--check", "--openwork-port", &port]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: port {port} is in use (--openwork-port / OPENWRK_OPENWORK_PORT)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("opencode server listening"), "{stderr}");
    assert_nothing_left(&env);
}

#[test]
fn owpenbot_exiting_is_a_warning_unless_required() {
    let env = Env::new();
    let bot = env.wrapper("standin-owpenbot", "STANDIN_MODE=crash-after:1s", "");
    let mut run =
        Run::start(env.openwrk_with("serve", &["--json"], [None, None, Some(bot.clone())]));
    run.wait_pairing();
    run.wait_line(true, "owpenbot (pid", Duration::from_secs(10));
    assert!(run.stderr().contains("keep running"), "{}", run.stderr());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "openwrk keeps running"
    );
    let left: Vec<String> = env.sidecars().into_iter().map(|(_, c)| c).collect();
    assert!(
        left.iter().any(|c| c.contains("standin-opencode")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|c| c.contains("standin-openwork-server")),
        "{left:?}"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(
        run.wait(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        run.stderr()
    );
    assert_nothing_left(&env);

    let mut run = Run::start(env.openwrk_with(
        "serve",
        &["--json", "--owpenbot-required"],
        [None, None, Some(bot)],
    ));
    run.wait_pairing();
    let status = run.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains("error: owpenbot (pid"),
        "{}",
        run.stderr()
    );
    assert_nothing_left(&env);
}

#[test]
fn sigterm_stops_children_exit_0_when_ready_and_143_before() {
    let env = Env::new();
    let mut run = Run::start(env.openwrk("serve", &["--json"]));
    run.wait_pairing();
    assert_eq!(env.sidecars().len(), 3, "{:?}", env.processes());
    run.signal(libc::SIGTERM);
    let status = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", run.stderr());
    assert!(env.processes().is_empty(), "{:?}", env.processes());

    let mut cmd = env.openwrk("serve", &[]);
    cmd.env("STANDIN_MODE", "slow-start:10s");
    let mut run = Run::start(cmd);
    run.wait_line(true, "waiting", Duration::from_secs(10));
    run.signal(libc::SIGTERM);
    let status = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(143), "{}", run.stderr());
    assert!(env.processes().is_empty(), "{:?}", env.processes());
}

#[test]
fn sigkill_of_openwrk_takes_the_children_down() {
    let env = Env::new();
    let mut run = Run::start(env.openwrk("serve", &["--json"]));
    run.wait_pairing();
    assert_eq!(env.sidecars().len(), 3, "{:?}", env.processes());
    run.signal(libc::SIGKILL);
    run.wait(Duration::from_secs(5));
    let left = env.wait_no_processes(Duration::from_secs(5));
    assert!(left.is_empty(), "orphans: {left:?}");
}

/// Every stand-in under `STANDIN_MODE=grandchildren` leaves three live
/// grandchildren: an orphan, a `setsid` one and one ignoring SIGTERM.
const GRANDCHILDREN_PER_SIDECAR: usize = 3;

impl Env {
    /// A marker unique to this test, for the stand-ins' grandchildren.
    fn marker(&self) -> String {
        format!("gc-{}", self.path().file_name().unwrap().to_string_lossy())
    }

    /// `openwrk <command>` whose stand-ins start grandchildren.
    fn openwrk_grandchildren(&self, command: &str, args: &[&str]) -> Command {
        let mut cmd = self.openwrk(command, args);
        cmd.env("STANDIN_MODE", "grandchildren")
            .env("STANDIN_MARKER", self.marker());
        cmd
    }

    /// Waits until all `n` grandchildren are running.
    fn wait_grandchildren(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = processes_matching(&self.marker());
            if found.len() == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} grandchildren: {found:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that no grandchild is alive 2 s after `since` (zombies aside).
    fn assert_grandchildren_gone(&self, since: Instant) {
        let deadline = since + Duration::from_secs(2);
        loop {
            let left = processes_matching(&self.marker());
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "still alive 2 s later: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn sigkill_of_serve_takes_every_grandchild_down() {
    let env = Env::new();
    let mut run = Run::start(env.openwrk_grandchildren("serve", &["--json"]));
    run.wait_pairing();
    env.wait_grandchildren(3 * GRANDCHILDREN_PER_SIDECAR);
    run.signal(libc::SIGKILL);
    let killed = Instant::now();
    run.wait(Duration::from_secs(5));
    env.assert_grandchildren_gone(killed);
    assert_nothing_left(&env);
}

#[test]
fn a_clean_stop_takes_every_grandchild_down_too() {
    let env = Env::new();
    let mut run = Run::start(env.openwrk_grandchildren("serve", &["--json"]));
    run.wait_pairing();
    env.wait_grandchildren(3 * GRANDCHILDREN_PER_SIDECAR);
    run.signal(libc::SIGTERM);
    let status = run.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", run.stderr());
    // Everything is gone by the time openwrk has exited.
    env.assert_grandchildren_gone(Instant::now() - Duration::from_secs(2));
    assert_nothing_left(&env);
}

#[test]
fn stop_and_sigkill_of_a_detached_supervisor_take_every_grandchild_down() {
    let env = Env::new();
    // `openwrk stop` …
    let (status, _, stderr) = run_to_end(
        env.openwrk_grandchildren("serve", &["--detach", "--run-id", "gc-stop"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    env.wait_grandchildren(3 * GRANDCHILDREN_PER_SIDECAR);
    let (status, stdout, stderr) = run_to_end(env.stop(), Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("stopped run gc-stop"), "{stdout}");
    env.assert_grandchildren_gone(Instant::now() - Duration::from_secs(1));
    assert_nothing_left(&env);

    // … and SIGKILL of its supervisor.
    let (status, _, stderr) = run_to_end(
        env.openwrk_grandchildren("serve", &["--detach", "--run-id", "gc-bg"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    env.wait_grandchildren(3 * GRANDCHILDREN_PER_SIDECAR);
    let record = env.data().join("runs/gc-bg.json");
    let r: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    signal(r["supervisorPid"].as_u64().unwrap() as u32, libc::SIGKILL);
    let killed = Instant::now();
    env.assert_grandchildren_gone(killed);
    assert_nothing_left(&env);
}

/// An unrelated process (a group leader, so a wrong group signal would
/// reach it too) that the test owns and kills at the end.
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        Bystander(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A run record for `run_id` whose every pid is `pid`, with `start` as
/// every recorded start time (omitted: an older record without them).
fn forged_record(env: &Env, run_id: &str, pid: u32, start: Option<u64>) -> PathBuf {
    let mut child = serde_json::json!({
        "name": "opencode", "pid": pid, "pgid": pid, "port": 1,
        "localUrl": "http://127.0.0.1:1", "version": null,
        "binary": "/nonexistent/opencode", "startedUnixMs": 0
    });
    let mut record = serde_json::json!({
        "runId": run_id, "supervisorPid": pid, "startedAt": "2020-01-01T00:00:00Z",
        "startedUnixMs": 1, "workspace": "/nonexistent", "log": "/nonexistent/x.log",
        "remoteAccess": false, "children": [],
        "pairing": {
            "runId": run_id, "workspace": "/nonexistent",
            "openwork": {"url": "http://127.0.0.1:1", "token": "t", "hostToken": "h"},
            "opencode": {"url": "http://127.0.0.1:1", "username": "u", "password": "p", "version": null},
            "owpenbot": {"enabled": false, "healthPort": null},
            "attach": "opencode attach http://127.0.0.1:1"
        }
    });
    if let Some(start) = start {
        record["supervisorStart"] = start.into();
        child["processStart"] = start.into();
        child["guardianPid"] = pid.into();
        child["guardianStart"] = start.into();
    }
    record["children"] = serde_json::json!([child]);
    let path = env.data().join(format!("runs/{run_id}.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    path
}

#[test]
fn stop_never_signals_a_pid_that_another_process_now_has() {
    let env = Env::new();
    let mut bystander = Bystander::start();
    let pid = bystander.pid();
    // A record whose start times do not match (the pid was reused) …
    let forged = forged_record(&env, "forged-1", pid, Some(1));
    let mut stop = env.stop();
    stop.args(["--run-id", "forged-1"]);
    let (status, stdout, stderr) = run_to_end(stop, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("run forged-1 was no longer running; removed its record"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "pid {pid} (supervisor) now belongs to another process (sleep, started "
        )) && stdout.contains("); not signalled"),
        "{stdout}"
    );
    assert!(!forged.exists());
    // … and an older record without start times: never signalled either.
    let forged = forged_record(&env, "forged-2", pid, None);
    let (status, stdout, stderr) = run_to_end(env.stop(), Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("no start time to prove it is ours") && stdout.contains("not signalled"),
        "{stdout}"
    );
    assert!(!forged.exists());
    std::thread::sleep(Duration::from_millis(200));
    assert!(bystander.alive(), "stop signalled an unrelated process");
}

#[test]
fn children_ignoring_sigterm_get_sigkill_after_the_grace_period() {
    let env = Env::new();
    let mut cmd = env.openwrk("serve", &["--check"]);
    cmd.env("STANDIN_IGNORE_SIGTERM", "1");
    let started = Instant::now();
    let (status, _, stderr) = run_to_end(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(5), "{stderr}");
    assert!(
        stderr.contains("did not stop within 5 s of SIGTERM; sending SIGKILL"),
        "{stderr}"
    );
    assert_nothing_left(&env);
}

#[test]
fn json_logs_are_otel_records_with_the_run_id() {
    let env = Env::new();
    let (status, _, stderr) = run_to_end(
        env.openwrk(
            "serve",
            &["--check", "--log-format", "json", "--run-id", "run-json-7"],
        ),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let mut services = std::collections::BTreeSet::new();
    for line in stderr.lines() {
        let r: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(r["attributes"]["run.id"], "run-json-7", "{line}");
        assert!(r["timeUnixNano"].as_str().unwrap().parse::<u128>().is_ok());
        assert!(r["severityNumber"].as_u64().is_some());
        assert_eq!(r["resource"]["service.namespace"], "openwrk");
        assert!(r["attributes"]["process.pid"].as_u64().is_some());
        services.insert(
            r["attributes"]["service.name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for s in ["openwrk", "opencode", "openwork-server", "owpenbot"] {
        assert!(services.contains(s), "no record from {s}: {services:?}");
    }
    // pino (owpenbot) and logfmt (OpenCode) lines are parsed, not kept verbatim.
    assert!(
        stderr.contains(r#""body":"no channel configured (telegram, whatsapp)""#),
        "{stderr}"
    );
    assert!(stderr.contains(r#""severityText":"WARN""#), "{stderr}");
    assert!(stderr.contains(r#""body":"server listening""#), "{stderr}");
}

#[test]
fn secrets_stay_out_of_logs_and_argv() {
    let env = Env::new();
    let (password, token, host) = (
        "pw-Secret-9f8e7d6c",
        "tok-Secret-1a2b3c4d",
        "host-Secret-5e6f7a8b",
    );
    // OpenCode echoing its password must not leak it into the log.
    let oc = env.wrapper(
        "standin-opencode",
        "",
        "echo \"my password is $OPENCODE_SERVER_PASSWORD\" >&2",
    );
    let mut cmd = env.openwrk_with(
        "serve",
        &["--json", "--no-log-requests"],
        [Some(oc), None, None],
    );
    cmd.env("OPENWRK_OPENCODE_PASSWORD", password)
        .env("OPENWRK_OPENWORK_TOKEN", token)
        .env("OPENWRK_HOST_TOKEN", host);
    let mut run = Run::start(cmd);
    let p = run.wait_pairing();
    assert_eq!(p["opencode"]["password"], password);
    assert_eq!(p["openwork"]["token"], token);
    assert_eq!(p["openwork"]["hostToken"], host);
    let children = env.sidecars();
    assert_eq!(children.len(), 3, "{children:?}");
    for (pid, cmdline) in &children {
        for s in [password, token, host] {
            assert!(!cmdline.contains(s), "{s} in argv of {pid}: {cmdline}");
        }
        if cmdline.contains("standin-openwork-server") {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
            let environ = String::from_utf8_lossy(&environ);
            assert!(environ.contains(&format!("OPENWORK_TOKEN={token}")));
            assert!(environ.contains("OPENWORK_LOG_REQUESTS=0"));
            assert!(
                !environ.contains("OPENWRK_OPENWORK_TOKEN"),
                "openwrk's own copy is not passed on"
            );
        }
    }
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait(Duration::from_secs(15)).code(), Some(0));
    let stderr = run.stderr();
    assert!(stderr.contains("my password is ***"), "{stderr}");
    for s in [password, token, host] {
        assert!(!stderr.contains(s), "{s} leaked into the log:\n{stderr}");
    }
    assert_nothing_left(&env);
}

#[test]
fn detach_then_stop() {
    let env = Env::new();
    let (status, stdout, stderr) = run_to_end(
        env.openwrk("serve", &["--detach", "--json", "--run-id", "bg-1"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let p: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(p["runId"], "bg-1");
    assert!(stderr.contains("openwrk stop --run-id bg-1"), "{stderr}");
    let record = env.data().join("runs/bg-1.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(r["children"].as_array().unwrap().len(), 3, "{r}");
    let log = std::fs::read_to_string(env.data().join("runs/bg-1.log")).unwrap();
    assert!(log.contains("openwork-server is healthy"), "{log}");
    assert!(
        !log.contains(p["openwork"]["token"].as_str().unwrap()),
        "{log}"
    );
    // The supervisor, the three children and their guardians keep running after openwrk exited.
    assert_eq!(env.sidecars().len(), 3, "{:?}", env.processes());
    assert_eq!(env.processes().len(), 7, "{:?}", env.processes());
    for c in r["children"].as_array().unwrap() {
        assert!(c["processStart"].as_u64().is_some(), "{c}");
        assert!(c["guardianPid"].as_u64().is_some(), "{c}");
    }
    assert!(r["supervisorStart"].as_u64().is_some(), "{r}");

    let (status, stdout, stderr) = run_to_end(env.stop(), Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("stopped run bg-1"), "{stdout}");
    assert!(!record.exists());
    assert_nothing_left(&env);

    // A supervisor killed outright takes its children along; stop cleans up the record.
    let (status, _, stderr) = run_to_end(
        env.openwrk("serve", &["--detach", "--run-id", "bg-2"]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let record = env.data().join("runs/bg-2.json");
    let r: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    signal(r["supervisorPid"].as_u64().unwrap() as u32, libc::SIGKILL);
    assert_nothing_left(&env);
    let (status, stdout, _) = run_to_end(env.stop(), Duration::from_secs(20));
    assert!(status.success());
    assert!(
        stdout.contains("run bg-2 was no longer running; removed its record"),
        "{stdout}"
    );
    assert!(!record.exists());

    let (status, _, stderr) = run_to_end(env.stop(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("no detached run to stop"), "{stderr}");
}

/// A local mirror (manifest plus assets) whose sidecars are the stand-ins.
fn stand_in_dist(dir: &Path) -> PathBuf {
    use openwrk::supply::digest::hash_file;
    use openwrk_test_support::fixtures::{self, Entry};
    std::fs::create_dir_all(dir).unwrap();
    let t = fixtures::host_target();
    let opencode = dir.join("opencode");
    fixtures::write_binary(&opencode, "opencode", Some(&standin("standin-opencode")), 0).unwrap();
    let asset = format!("opencode-{t}.tar.gz");
    fixtures::tar_gz(&dir.join(&asset), &[("opencode", Entry::File(&opencode))]).unwrap();
    let (bin, archive) = (
        hash_file(&opencode).unwrap(),
        hash_file(&dir.join(&asset)).unwrap(),
    );
    std::fs::remove_file(&opencode).unwrap();
    let mut entries = serde_json::json!({
        "opencode": {"version": "1.0.0", "targets": {t: {
            "asset": asset, "sha256": archive.sha256, "size": archive.size, "archive": "tar.gz",
            "binary": "opencode", "binarySha256": bin.sha256, "binarySize": bin.size}}}
    });
    for name in ["openwork-server", "owpenbot"] {
        let file = format!("{name}-{t}");
        let real = standin(&format!("standin-{name}"));
        fixtures::write_binary(&dir.join(&file), name, Some(&real), 0).unwrap();
        let d = hash_file(&dir.join(&file)).unwrap();
        entries[name] = serde_json::json!({"version": "2.0.0", "targets": {t: {
            "asset": file, "sha256": d.sha256, "size": d.size}}});
    }
    let manifest = serde_json::json!({"schemaVersion": 1, "version": "0.1.0",
        "generatedAt": "2023-11-14T22:13:20Z", "entries": entries});
    let path = dir.join("openwrk-sidecars.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

#[test]
fn sidecars_from_a_manifest_are_verified_then_warm() {
    let env = Env::new();
    let manifest = stand_in_dist(&env.path().join("dist"));
    let serve = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        for (k, _) in std::env::vars() {
            if k.starts_with("OPENWRK_") || k.starts_with("STANDIN_") {
                cmd.env_remove(k);
            }
        }
        cmd.args([
            "serve",
            "--check",
            "--verbose",
            "--openwork-port",
            "0",
            "--color",
            "never",
        ])
        .arg("--sidecar-manifest")
        .arg(&manifest)
        .arg("--data-dir")
        .arg(env.data())
        .arg("--workspace")
        .arg(env.path().join("ws"))
        .stdin(Stdio::null());
        run_to_end(cmd, Duration::from_secs(60))
    };
    let (status, stdout, stderr) = serve();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("openwrk is ready"), "{stdout}");
    assert!(
        stderr.contains("opencode 1.0.0") && stderr.contains("size and sha256 checked"),
        "{stderr}"
    );
    let (status, _, stderr) = serve();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("openwork-server 2.0.0")
            && stderr.contains(": cache ")
            && stderr.contains("verified before; size, mtime, ctime and inode unchanged since"),
        "{stderr}"
    );
    assert_nothing_left(&env);
}

#[test]
fn real_opencode_check_events() {
    let Some(bin) = openwrk_test_support::real_opencode() else {
        return;
    };
    let env = Env::new();
    let home = env.path().join("home");
    let mut cmd = env.openwrk_with(
        "serve",
        &["--check", "--check-events", "--json"],
        [Some(bin), None, None],
    );
    openwrk_test_support::private_opencode_env(&mut cmd, &home);
    let (status, stdout, stderr) = run_to_end(cmd, Duration::from_secs(90));
    assert!(status.success(), "{stderr}");
    let p: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        p["opencode"]["version"]
            .as_str()
            .is_some_and(|v| v.contains('.')),
        "{p}"
    );
    assert!(
        stderr.contains("first event `server.connected`"),
        "{stderr}"
    );
    assert_nothing_left(&env);
}
