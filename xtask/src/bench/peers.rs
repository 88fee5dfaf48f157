//! `bench peers`: the upstream packages beside ours, measured in the same run
//! (when the npm registry is reachable, or their packages are cached):
//! `openwrk-linux-x64@0.11.74` and `openwork-orchestrator-linux-x64`
//! (latest). Binary size, `--help` start-up, warm sidecar resolution, and
//! `start --check --check-events` with the real OpenCode (stand-in OpenWork
//! server for everyone, no chat bridge): passes out of 5, each within 90 s.
//! The packages are kept in `~/.cache/openwrk-bench/peers`, outside the repo.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, have, median, median_run, real_opencode, release_openwrk, Figure};
use crate::demo;

const CMD: &str = "cargo xtask bench peers";
const CHECK_RUNS: usize = 5;
const CHECK_TIMEOUT_SECS: u64 = 90;

/// One program under comparison.
struct Subject {
    label: String,
    bin: PathBuf,
    /// How it spells "no chat bridge" (if it has one).
    no_bridge: Option<&'static str>,
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("openwrk-bench/peers"))
}

/// `npm pack <package>@<version>` into the cache (once), unpacked; its binary.
fn fetch(package: &str, version: Option<&str>, bin: &str) -> Result<(String, PathBuf), String> {
    let dir = cache_dir().ok_or("no cache directory (HOME is not set)")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let version = match version {
        Some(v) => v.to_string(),
        None => {
            let asked = Command::new("timeout")
                .args(["60", "npm", "view", package, "version"])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|v| !v.is_empty());
            match asked {
                Some(v) => v,
                // Offline: the newest version already cached.
                None => {
                    let mut cached: Vec<String> = std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()?
                                .strip_prefix(&format!("{package}-"))
                                .filter(|v| !v.ends_with(".tgz"))
                                .map(str::to_string)
                        })
                        .collect();
                    cached.sort();
                    cached.pop().ok_or_else(|| {
                        format!(
                            "the npm registry is unreachable and {package} is not cached in {}",
                            dir.display()
                        )
                    })?
                }
            }
        }
    };
    let unpacked = dir.join(format!("{package}-{version}"));
    let path = unpacked.join("package/bin").join(bin);
    if path.is_file() {
        return Ok((version, path));
    }
    if !have("npm") {
        return Err("npm is not installed (apt-get install npm)".into());
    }
    let tgz = dir.join(format!("{package}-{version}.tgz"));
    if !tgz.is_file() {
        let ok = Command::new("timeout")
            .args([
                "300",
                "npm",
                "pack",
                "--silent",
                &format!("{package}@{version}"),
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !tgz.is_file() {
            return Err(format!(
                "`npm pack {package}@{version}` failed (registry unreachable?)"
            ));
        }
    }
    std::fs::create_dir_all(&unpacked).map_err(|e| e.to_string())?;
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !path.is_file() {
        return Err(format!("{} holds no package/bin/{bin}", tgz.display()));
    }
    Ok((version, path))
}

fn help_text(bin: &Path) -> String {
    Command::new(bin)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        })
        .unwrap_or_default()
}

/// Kills what a run left behind (processes with the scratch dir in their
/// command line or working directory).
fn reap(dir: &Path) {
    for (pid, _) in openwrk_test_support::processes_under(dir) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

/// `start --check --check-events` with the real OpenCode and the stand-in
/// OpenWork server: (passes, median time of the passing runs, last failure).
fn checks(
    s: &Subject,
    opencode: &Path,
    server: &Path,
) -> anyhow::Result<(usize, Option<Duration>, String)> {
    let (mut passes, mut times, mut failure) = (0, Vec::new(), String::new());
    for _ in 0..CHECK_RUNS {
        let tmp = tempfile::Builder::new().prefix("openwrk-peer-").tempdir()?;
        let workspace = tmp.path().join("workspace");
        std::fs::create_dir_all(&workspace)?;
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &CHECK_TIMEOUT_SECS.to_string()])
            .arg(&s.bin)
            .args([
                "start",
                "--check",
                "--check-events",
                "--no-tui",
                "--allow-external",
            ])
            .arg("--workspace")
            .arg(&workspace)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .arg("--opencode-bin")
            .arg(opencode)
            .arg("--openwork-server-bin")
            .arg(server)
            .args(["--openwork-port", &free_port()?.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(flag) = s.no_bridge {
            cmd.arg(flag);
        }
        openwrk_test_support::private_opencode_env(&mut cmd, &tmp.path().join("home"));
        let started = Instant::now();
        let out = cmd.output()?;
        let took = started.elapsed();
        reap(tmp.path());
        if out.status.success() {
            passes += 1;
            times.push(took);
        } else {
            // Upstream logs to stdout, we to stderr: the last line of either.
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            failure = if out.status.code() == Some(124) {
                format!(
                    "no result within {CHECK_TIMEOUT_SECS} s; its last line: {}",
                    last.chars().take(160).collect::<String>()
                )
            } else {
                format!(
                    "exit {:?}: {}",
                    out.status.code(),
                    last.chars().take(160).collect::<String>()
                )
            };
        }
    }
    let t = (!times.is_empty()).then(|| median(times));
    Ok((passes, t, failure))
}

pub fn bench() -> anyhow::Result<Vec<Figure>> {
    println!("bench peers (upstream npm packages beside ours, same run)");
    let ours = release_openwrk()?;
    let bins = demo::build_workspace_bins()?;
    let server = bins.join(format!(
        "standin-openwork-server{}",
        std::env::consts::EXE_SUFFIX
    ));
    let mut subjects = vec![Subject {
        label: format!("openwrk {} (this repo)", openwrk::VERSION),
        bin: ours,
        no_bridge: Some("--no-owpenbot"),
    }];
    let mut figures = Vec::new();
    if std::env::consts::OS != "linux" || std::env::consts::ARCH != "x86_64" {
        figures.push(Figure::skipped(
            "upstream peers",
            "–",
            "the upstream packages measured are linux-x64 builds",
            CMD,
        ));
    } else {
        for (package, version, bin) in [
            ("openwrk-linux-x64", Some("0.11.74"), "openwrk"),
            ("openwork-orchestrator-linux-x64", None, "openwork"),
        ] {
            match fetch(package, version, bin) {
                Ok((v, path)) => {
                    let help = help_text(&path);
                    let no_bridge = ["--no-opencode-router", "--no-owpenbot"]
                        .into_iter()
                        .find(|f| help.contains(f));
                    subjects.push(Subject {
                        label: format!("{package}@{v} (upstream)"),
                        bin: path,
                        no_bridge,
                    });
                }
                Err(why) => figures.push(Figure::skipped(
                    format!("{package} (upstream)"),
                    "–",
                    &why,
                    CMD,
                )),
            }
        }
    }
    let opencode = real_opencode();
    for s in &subjects {
        let mb = std::fs::metadata(&s.bin).map_or(0.0, |m| m.len() as f64 / 1e6);
        let help = median_run(11, || {
            let mut c = Command::new(&s.bin);
            c.arg("--help");
            c
        });
        let help = match help {
            Ok(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
            Err(e) => format!("failed: {e}"),
        };
        // Warm resolution needs a command that resolves without starting
        // anything: a `sidecars` command in the help's command list.
        let has_sidecars_command = help_text(&s.bin)
            .lines()
            .any(|l| l.trim_start().starts_with("sidecars ") && l.starts_with("  "));
        let warm = if has_sidecars_command {
            "`sidecars list`, measured by `cargo xtask bench fetch` (the warm-resolution figures)"
                .to_string()
        } else {
            "not measurable: no command resolves the sidecars without starting them (`--help` lists none)".to_string()
        };
        let check = match &opencode {
            Some(oc) => {
                let (passes, t, failure) = checks(s, oc, &server)?;
                let mut c = format!("{passes}/{CHECK_RUNS} passed");
                if let Some(t) = t {
                    c.push_str(&format!(", median {:.2} s", t.as_secs_f64()));
                }
                if !failure.is_empty() {
                    c.push_str(&format!(" (last failure: {failure})"));
                }
                c
            }
            None => "not measured: no real OpenCode (set OPENWRK_TEST_OPENCODE_BIN)".into(),
        };
        println!("  {}: {mb:.1} MB; --help {help}; warm resolution: {warm}; start --check --check-events: {check}", s.label);
        figures.push(Figure::info(
            format!("peer: {}", s.label),
            format!(
                "{mb:.1} MB; `--help` {help}; warm resolution: {warm}; `start --check --check-events` (real OpenCode, stand-in OpenWork server, {CHECK_TIMEOUT_SECS} s limit): {check}"
            ),
            CMD,
        ));
    }
    println!("  reproduce: {CMD}");
    Ok(figures)
}
