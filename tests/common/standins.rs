//! Running the real `openwrk` binary against the stand-in sidecars of
//! test-support, in a private directory per test: workspace, data dir,
//! wrapper scripts. A process whose working directory or command line is
//! inside it belongs to that test, which is how "nothing left" is checked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openwrk_test_support::{processes_under, standin};
use serde_json::Value;

pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new(prefix: &str) -> Env {
        let tmp = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("ws")).unwrap();
        Env { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// A new directory (canonical path).
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    /// A script that runs `body` (a stand-in gets `"$@"` appended by the caller).
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path().join(format!("{name}.sh"));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A stand-in run with extra environment and a line of shell first.
    pub fn wrapper(&self, name: &str, env: &str, before: &str) -> PathBuf {
        let body = format!("{before}\n{env} exec '{}' \"$@\"", standin(name).display());
        self.script(name, &body)
    }

    /// `openwrk` with a hermetic environment (none of the caller's
    /// openwrk, OpenWork, OpenCode or stand-in variables) and this data dir.
    pub fn bare(&self, args: &[&str]) -> Command {
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
        cmd.arg("--data-dir")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `openwrk <command> …` with the three stand-ins (or the given binaries).
    pub fn sidecars(&self, command: &str, args: &[&str], bins: [Option<PathBuf>; 3]) -> Command {
        let mut cmd = self.sidecars_on_default_port(command, args, bins);
        if !args.iter().any(|a| a.starts_with("--openwork-port")) {
            // Parallel tests must not race for the default 8787.
            cmd.args(["--openwork-port", "0"]);
        }
        cmd
    }

    /// [`Env::sidecars`] leaving the OpenWork server's port to openwrk (8787 if free).
    pub fn sidecars_on_default_port(
        &self,
        command: &str,
        args: &[&str],
        bins: [Option<PathBuf>; 3],
    ) -> Command {
        let [oc, ow, bot] = bins;
        let oc = oc.unwrap_or_else(|| standin("standin-opencode"));
        let ow = ow.unwrap_or_else(|| standin("standin-openwork-server"));
        let bot = bot.unwrap_or_else(|| standin("standin-owpenbot"));
        let mut cmd = self.bare(&[command]);
        cmd.arg("--workspace")
            .arg(self.path().join("ws"))
            .arg("--opencode-bin")
            .arg(oc)
            .arg("--openwork-server-bin")
            .arg(ow)
            .arg("--owpenbot-bin")
            .arg(bot)
            .arg("--allow-external")
            .args(args);
        cmd
    }

    pub fn serve(&self, args: &[&str]) -> Command {
        self.sidecars("serve", args, [None, None, None])
    }

    /// Waits until none of this test's processes is left; returns the leftovers.
    pub fn wait_no_processes(&self, within: Duration) -> Vec<(u32, String)> {
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
        // A failed test must not leak processes into the next ones.
        for (pid, _) in processes_under(self.path()) {
            signal(pid, libc::SIGKILL);
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A running openwrk whose output is collected line by line.
pub struct Run {
    pub child: Child,
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
    pub fn start(mut cmd: Command) -> Run {
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

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn wait_line(&self, on_stderr: bool, needle: &str, within: Duration) -> String {
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

    pub fn signal(&self, sig: i32) {
        signal(self.child.id(), sig);
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
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

/// Runs `cmd` to its end: status, stdout, stderr.
pub fn run_to_end(cmd: Command, within: Duration) -> (ExitStatus, String, String) {
    let mut run = Run::start(cmd);
    let status = run.wait(within);
    (status, run.stdout(), run.stderr())
}

/// One HTTP request over loopback: status and body.
pub fn http(method: &str, url: &str, bearer: Option<&str>) -> (u16, String) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    http_with(method, url, &headers)
}

/// [`http`] with the given headers.
pub fn http_with(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    openwrk::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    })
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every stderr line as a JSON log record (`--log-format json`).
pub fn records(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(json)
        .collect()
}
