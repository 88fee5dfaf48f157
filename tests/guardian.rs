//! The process guardian on its own (`openwrk __guardian -- …`, SPEC §5.1),
//! on every Unix: the process table comes from `ps`, so these tests also run
//! on the macOS runners, where the guardian has no subreaper to lean on.

#![cfg(unix)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openwrk_test_support::standin;

/// Live (non-zombie) processes whose command line contains `marker`.
fn live_with(marker: &str) -> Vec<String> {
    let out = Command::new("ps")
        .args(["axww", "-o", "pid=,stat=,command="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .filter(|l| !l.split_whitespace().nth(1).unwrap_or("Z").starts_with('Z'))
        .map(str::to_string)
        .collect()
}

/// A guardian running the stand-in OpenCode with three grandchildren; the
/// test holds the other end of the lifeline, as openwrk would.
struct Guarded {
    guardian: Child,
    lifeline: Option<UnixStream>,
    sidecar: i32,
    marker: String,
}

impl Guarded {
    fn start(name: &str) -> Guarded {
        let marker = format!("gd-{name}-{}", std::process::id());
        let (ours, theirs) = UnixStream::pair().unwrap();
        let guardian = Command::new(env!("CARGO_BIN_EXE_openwrk"))
            .args(["__guardian", "--"])
            .arg(standin("standin-opencode"))
            .args(["serve", "--hostname", "127.0.0.1", "--port", "0"])
            .env("STANDIN_MODE", "grandchildren")
            .env("STANDIN_MARKER", &marker)
            .env_remove("OPENCODE_SERVER_PASSWORD")
            .stdin(std::os::fd::OwnedFd::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut report = String::new();
        BufReader::new(&ours).read_line(&mut report).unwrap();
        let mut words = report.split_whitespace();
        assert_eq!(words.next(), Some("pid"), "{report:?}");
        let sidecar = words.next().unwrap().parse().unwrap();
        let g = Guarded {
            guardian,
            lifeline: Some(ours),
            sidecar,
            marker,
        };
        g.wait_grandchildren();
        g
    }

    fn wait_grandchildren(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_with(&self.marker).len() < 3 {
            assert!(Instant::now() < deadline, "{:?}", live_with(&self.marker));
            std::thread::sleep(Duration::from_millis(20));
        }
        // Past one snapshot of the tree (macOS takes one every 250 ms).
        std::thread::sleep(Duration::from_millis(400));
    }

    /// Nothing with the marker is alive within 2 s of `since`.
    fn assert_gone(&self, since: Instant) {
        loop {
            let left = live_with(&self.marker);
            if left.is_empty() {
                return;
            }
            assert!(
                since.elapsed() < Duration::from_secs(2),
                "alive 2 s later: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.guardian.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the guardian did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.lifeline = None;
        let _ = self.wait();
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[test]
fn the_lifeline_closing_takes_the_whole_tree_down() {
    let mut g = Guarded::start("lifeline");
    // What the kernel does when openwrk dies, SIGKILL included.
    g.lifeline = None;
    let closed = Instant::now();
    g.assert_gone(closed);
    g.wait();
}

#[test]
fn the_sidecar_exiting_takes_its_leftovers_down_and_its_status_is_kept() {
    let mut g = Guarded::start("exit");
    // openwrk's stop: SIGTERM to the sidecar's group (not to the guardian).
    kill(-g.sidecar, libc::SIGTERM);
    let stopped = Instant::now();
    let status = g.wait();
    assert_eq!(status.code(), Some(0), "the stand-in exits 0 on SIGTERM");
    g.assert_gone(stopped);

    let mut g = Guarded::start("signal");
    kill(g.sidecar, libc::SIGKILL);
    let status = g.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    g.assert_gone(Instant::now() - Duration::from_millis(500));
}

#[test]
fn sigterm_to_the_guardian_stops_its_sidecar_gracefully() {
    let mut g = Guarded::start("term");
    kill(g.guardian.id() as i32, libc::SIGTERM);
    let sent = Instant::now();
    assert_eq!(g.wait().code(), Some(0));
    g.assert_gone(sent);
}
