//! `cargo xtask bench <name>`: benchmarks print a figure, the baseline measured
//! in the same run with public tools (curl, sha256sum/openssl, gzip, pigz),
//! the ratio and the target (SPEC §10). Never timed tests. A missing tool is
//! named, and the figure that needs it says it was not measured.

mod bundle;
mod fetch;
mod peers;
mod proxy;
mod start;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// Bundle five targets (185 MB OpenCode in ~60 MB archives, ~100 MB prebuilt sidecars).
    Bundle,
    /// First fetch of the three sidecars from a loopback mirror; warm resolution (cache and bundled).
    Fetch,
    /// Launch to all-healthy with the real OpenCode, against OpenCode alone polled by curl.
    Start,
    /// The router daemon's proxy against OpenCode directly (latency p50/p99, RSS).
    Proxy,
    /// The upstream packages from npm beside ours (size, start-up, --check).
    Peers,
    /// `openwrk --help` against `/bin/true`.
    Help,
    /// Size of the stripped release binary.
    Size,
    /// Every benchmark; writes BENCHMARKS.md.
    All,
}

/// One measured figure for the report.
pub struct Figure {
    pub name: String,
    pub value: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    /// Why, where a target is missed or a figure needs context.
    pub note: String,
    pub command: &'static str,
}

impl Figure {
    /// A figure with a ratio against its target (`ratio <= limit` meets it).
    pub fn ratio(
        name: impl Into<String>,
        value: String,
        baseline: String,
        ratio: f64,
        limit: f64,
        command: &'static str,
    ) -> Figure {
        Figure {
            name: name.into(),
            value,
            baseline,
            ratio: Some(ratio),
            target: format!("≤ {limit}×"),
            met: Some(ratio <= limit),
            note: String::new(),
            command,
        }
    }

    /// A figure with an absolute limit and no baseline.
    pub fn limit(
        name: impl Into<String>,
        value: String,
        target: &str,
        met: bool,
        command: &'static str,
    ) -> Figure {
        Figure {
            name: name.into(),
            value,
            baseline: "–".into(),
            ratio: None,
            target: target.into(),
            met: Some(met),
            note: String::new(),
            command,
        }
    }

    /// A figure without a target (context).
    pub fn info(name: impl Into<String>, value: String, command: &'static str) -> Figure {
        Figure {
            name: name.into(),
            value,
            baseline: "–".into(),
            ratio: None,
            target: "–".into(),
            met: None,
            note: String::new(),
            command,
        }
    }

    /// A figure that could not be measured, and why.
    pub fn skipped(
        name: impl Into<String>,
        target: &str,
        why: &str,
        command: &'static str,
    ) -> Figure {
        println!("  not measured: {why}");
        Figure {
            name: name.into(),
            value: "not measured".into(),
            baseline: "–".into(),
            ratio: None,
            target: target.into(),
            met: None,
            note: format!("not measured: {why}"),
            command,
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Bundle => bundle::bench().map(drop),
        Which::Fetch => fetch::bench().map(drop),
        Which::Start => start::bench().map(drop),
        Which::Proxy => proxy::bench().await.map(drop),
        Which::Peers => peers::bench().map(drop),
        Which::Help => bench_help().map(drop),
        Which::Size => bench_size().map(drop),
        Which::All => {
            let mut figures = bench_size()?;
            figures.extend(bench_help()?);
            figures.extend(fetch::bench()?);
            figures.extend(bundle::bench()?);
            figures.extend(start::bench()?);
            figures.extend(proxy::bench().await?);
            figures.extend(peers::bench()?);
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
            std::fs::write(&path, report(&figures))?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}

/// BENCHMARKS.md: one table, then the notes for missed targets.
fn report(figures: &[Figure]) -> String {
    let mut out = String::from(
        "# Benchmarks\n\nWritten by `cargo xtask bench` (every figure and its baseline measured in the same run, \
         on the machine that ran it; see README.md for how each is measured).\n\n",
    );
    out.push_str(&format!(
        "Run: {} UTC, {} cores, openwrk {}; 1-minute load average at the end {} (anything above 0 is other work sharing the cores, \
         which stretches the CPU-bound figures more than their I/O-bound baselines).\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        openwrk::VERSION,
        load_average().map_or("unknown".into(), |l| format!("{l:.1}"))
    ));
    out.push_str("| figure | value | baseline (same run) | ratio | target | met | reproduce |\n|---|---|---|---|---|---|---|\n");
    for f in figures {
        let ratio = f
            .ratio
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "–".into());
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {ratio} | {} | {met} | `{}` |\n",
            f.name, f.value, f.baseline, f.target, f.command
        ));
    }
    let notes: Vec<&Figure> = figures.iter().filter(|f| !f.note.is_empty()).collect();
    if !notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for f in notes {
            out.push_str(&format!("- **{}**: {}\n", f.name, f.note));
        }
    }
    out
}

pub fn release_openwrk() -> anyhow::Result<std::path::PathBuf> {
    crate::cargo_build(&[
        "--quiet",
        "--release",
        "--package",
        "openwrk",
        "--bin",
        "openwrk",
    ])?;
    Ok(openwrk_test_support::target_dir()
        .join("release")
        .join(format!("openwrk{}", std::env::consts::EXE_SUFFIX)))
}

fn bench_size() -> anyhow::Result<Vec<Figure>> {
    let bin = release_openwrk()?;
    let bytes = std::fs::metadata(&bin)?.len();
    let mb = bytes as f64 / 1e6;
    let limit = 8.0;
    println!(
        "bench size: release openwrk {} is {mb:.2} MB stripped (target ≤ {limit} MB){}",
        bin.display(),
        verdict(mb <= limit)
    );
    Ok(vec![Figure {
        name: "release binary (stripped)".into(),
        value: format!("{mb:.2} MB"),
        baseline: format!("target {limit} MB (the Bun build it replaces: ~110 MB)"),
        ratio: Some(mb / limit),
        target: "≤ 8 MB".into(),
        met: Some(mb <= limit),
        note: String::new(),
        command: "cargo xtask bench size",
    }])
}

fn bench_help() -> anyhow::Result<Vec<Figure>> {
    let bin = release_openwrk()?;
    // Alternately, so load on the machine hits both alike.
    let (help, truth) = median_runs_alternating(
        51,
        || {
            let mut c = Command::new(&bin);
            c.arg("--help");
            c
        },
        || Command::new("/bin/true"),
    )?;
    let ratio = help.as_secs_f64() / truth.as_secs_f64();
    println!(
        "bench help: openwrk --help {:.2} ms vs /bin/true {:.2} ms   ratio {ratio:.2} (target ≤ 3){}",
        help.as_secs_f64() * 1e3,
        truth.as_secs_f64() * 1e3,
        verdict(ratio <= 3.0)
    );
    Ok(vec![Figure {
        name: "`openwrk --help` start-up".into(),
        value: format!("{:.2} ms", help.as_secs_f64() * 1e3),
        baseline: format!("/bin/true {:.2} ms", truth.as_secs_f64() * 1e3),
        ratio: Some(ratio),
        target: "≤ 3×".into(),
        met: Some(ratio <= 3.0),
        note: if ratio <= 3.0 {
            String::new()
        } else {
            format!(
                "missed by {:.0}%: start-up of a larger Rust binary (dynamic loader, relocations, clap) against a tiny C binary",
                (ratio / 3.0 - 1.0) * 100.0
            )
        },
        command: "cargo xtask bench help",
    }])
}

/// The real OpenCode: `OPENWRK_TEST_OPENCODE_BIN`, else the copy `.ci/run` caches.
pub fn real_opencode() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("OPENWRK_TEST_OPENCODE_BIN").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    let dir = home.join("openwrk-test/opencode");
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("package/bin/opencode"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Resident set size of a process (Linux `/proc`), 0 elsewhere.
pub fn vm_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident set size of a live process (`VmHWM`, Linux), 0 elsewhere.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether `tool` is an executable on PATH (benchmarks name what is missing).
pub fn have(tool: &str) -> bool {
    openwrk::supply::resolve::find_on_path(tool).is_some()
}

/// Sends SIGTERM with kill(1) (no libc in xtask).
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Median wall time of `n` runs of a command (output discarded).
pub fn median_run(n: usize, make: impl Fn() -> Command) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(timed_run(make())?);
    }
    Ok(median(times))
}

/// Medians of `n` runs of each of two commands, run alternately.
pub fn median_runs_alternating(
    n: usize,
    a: impl Fn() -> Command,
    b: impl Fn() -> Command,
) -> anyhow::Result<(Duration, Duration)> {
    let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        ta.push(timed_run(a())?);
        tb.push(timed_run(b())?);
    }
    Ok((median(ta), median(tb)))
}

/// Wall time of one run, output discarded; a failure is an error.
fn timed_run(mut cmd: Command) -> anyhow::Result<Duration> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let status = cmd.status()?;
    let took = started.elapsed();
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    Ok(took)
}

/// Benchmarks measure optimized code: build xtask (and with it the bundler) in release.
pub fn release_xtask() -> anyhow::Result<std::path::PathBuf> {
    crate::cargo_build(&["--quiet", "--release", "--package", "xtask"])?;
    Ok(openwrk_test_support::target_dir()
        .join("release")
        .join(format!("xtask{}", std::env::consts::EXE_SUFFIX)))
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "  ok"
    } else {
        "  MISSED"
    }
}

/// Runs a command to completion; wall time and its peak RSS in KiB (`/usr/bin/time -f %M`).
pub fn run_measured(cmd: Command) -> anyhow::Result<(Duration, u64)> {
    run_timed(cmd).map(|t| (t.took, t.kib))
}

/// One measured run of a command.
pub struct Timed {
    pub took: Duration,
    /// Peak RSS in KiB.
    pub kib: u64,
    /// CPU seconds, user + system, children included.
    pub cpu: f64,
    /// Every stderr line and when it arrived (phases of the run).
    pub lines: Vec<(Duration, String)>,
}

impl Timed {
    /// When the last line containing `needle` arrived.
    pub fn last(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .rev()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }
}

/// Runs a command to completion: wall time, peak RSS and CPU seconds from
/// `/usr/bin/time -f "%M %U %S"`, and its stderr lines with their arrival times.
pub fn run_timed(cmd: Command) -> anyhow::Result<Timed> {
    use std::io::BufRead;
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(rss_file.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    timed
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = timed
        .spawn()
        .context("/usr/bin/time is needed to measure peak RSS")?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().expect("piped")).lines() {
        lines.push((started.elapsed(), line?));
    }
    let status = child.wait()?;
    let took = started.elapsed();
    if !status.success() {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(20)
            .map(|(_, l)| l.as_str())
            .collect();
        bail!(
            "benchmarked command failed ({status}); its last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let text = std::fs::read_to_string(rss_file.path())?;
    let fields: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let kib = fields.first().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu = fields[1.min(fields.len())..]
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Ok(Timed {
        took,
        kib,
        cpu,
        lines,
    })
}

/// The 1-minute load average (Linux), to say how busy the machine was.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
