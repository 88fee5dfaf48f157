//! `cargo xtask bench <name>`: benchmarks print a figure, the baseline measured
//! in the same run, the ratio and the target (SPEC §10). Never timed tests.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::demo;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// Bundle five targets (~60 MB archives) from the loopback host.
    Bundle,
    /// First fetch of a 150 MB sidecar from a loopback mirror; warm resolution.
    Fetch,
    /// Launch to all-healthy with the real OpenCode, against OpenCode alone.
    Start,
    /// `openwrk --help` against `/bin/true`.
    Help,
    /// Size of the stripped release binary.
    Size,
    /// Every benchmark; writes BENCHMARKS.md.
    All,
}

/// One measured figure for the report.
pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub target: &'static str,
    pub met: Option<bool>,
    /// Why, where a target is missed or a figure needs context.
    pub note: String,
    pub command: &'static str,
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Bundle => bench_bundle().map(drop),
        Which::Fetch => bench_fetch().map(drop),
        Which::Start => bench_start().await.map(drop),
        Which::Help => bench_help().map(drop),
        Which::Size => bench_size().map(drop),
        Which::All => {
            let mut figures = bench_size()?;
            figures.extend(bench_help()?);
            figures.extend(bench_fetch()?);
            figures.extend(bench_bundle()?);
            figures.extend(bench_start().await?);
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
        "Run: {} UTC, {} cores, openwrk {}.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        openwrk::VERSION
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

fn release_openwrk() -> anyhow::Result<std::path::PathBuf> {
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
        name: "release binary (stripped)",
        value: format!("{mb:.2} MB"),
        baseline: format!("target {limit} MB (the Bun build it replaces: ~110 MB)"),
        ratio: Some(mb / limit),
        target: "≤ 8 MB",
        met: Some(mb <= limit),
        note: String::new(),
        command: "cargo xtask bench size",
    }])
}

fn bench_help() -> anyhow::Result<Vec<Figure>> {
    let bin = release_openwrk()?;
    let help = median_run(51, || {
        let mut c = Command::new(&bin);
        c.arg("--help");
        c
    })?;
    let truth = median_run(51, || Command::new("/bin/true"))?;
    let ratio = help.as_secs_f64() / truth.as_secs_f64();
    println!(
        "bench help: openwrk --help {:.2} ms vs /bin/true {:.2} ms   ratio {ratio:.2} (target ≤ 3){}",
        help.as_secs_f64() * 1e3,
        truth.as_secs_f64() * 1e3,
        verdict(ratio <= 3.0)
    );
    Ok(vec![Figure {
        name: "`openwrk --help` start-up",
        value: format!("{:.2} ms", help.as_secs_f64() * 1e3),
        baseline: format!("/bin/true {:.2} ms", truth.as_secs_f64() * 1e3),
        ratio: Some(ratio),
        target: "≤ 3×",
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

/// Size of the noise appended to each stand-in binary: ~60 MB archives.
const ASSET_PAD: u64 = 60 * 1024 * 1024;
/// Per-connection bandwidth of the loopback host, a stand-in for a CDN link
/// (unthrottled loopback would measure memcpy, not downloads).
const LINK_BYTES_PER_SEC: u64 = 100 * 1024 * 1024;

fn bench_bundle() -> anyhow::Result<Vec<Figure>> {
    let bins = demo::build_workspace_bins()?;
    let tmp = tempfile::Builder::new()
        .prefix("openwrk-bench-")
        .tempdir()?;
    eprintln!("bench bundle: writing fixtures (5 × ~60 MB OpenCode archives) …");
    let (host, prebuilt, bin_dir) = demo::loopback_release(tmp.path(), &bins, ASSET_PAD)?;
    host.faults()
        .throttle_bytes_per_sec
        .store(LINK_BYTES_PER_SEC, Ordering::SeqCst);

    // Baseline: each asset alone with curl; the slowest one.
    let mut slowest = Duration::ZERO;
    let mut slowest_name = String::new();
    for target in openwrk_test_support::fixtures::TARGETS {
        let ext = if target.starts_with("linux") {
            "tar.gz"
        } else {
            "zip"
        };
        let name = format!("opencode-{target}.{ext}");
        let url = format!(
            "{}/{}/releases/download/{}/{name}",
            host.url(),
            demo::DEMO_REPO,
            demo::DEMO_OPENCODE_TAG
        );
        let out = tmp.path().join("curl.out");
        let started = Instant::now();
        let status = Command::new("curl")
            .args(["-sf", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .context("curl is needed for the baseline")?;
        let took = started.elapsed();
        if !status.success() {
            bail!("curl {url} failed ({status})");
        }
        if took > slowest {
            slowest = took;
            slowest_name = name;
        }
    }

    let xtask = release_xtask()?;
    let bundle = |mode: &str| -> anyhow::Result<(Duration, u64)> {
        let mut cmd = Command::new(&xtask);
        cmd.arg("bundle")
            .arg("--out")
            .arg(tmp.path().join(format!("dist-{mode}")))
            .args(["--mode", mode])
            .arg("--prebuilt")
            .arg(&prebuilt)
            .arg("--openwrk-bin-dir")
            .arg(&bin_dir)
            .env("OPENWRK_GITHUB_API_URL", host.api_url())
            .env("OPENWRK_OPENCODE_REPO", demo::DEMO_REPO)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("CI", "true")
            .stdout(std::process::Stdio::null());
        run_measured(cmd)
    };
    let (download_only, _) = bundle("download")?;
    let (took, peak_kib) = bundle("both")?;
    let ratio = took.as_secs_f64() / slowest.as_secs_f64();
    println!(
        "bench bundle (5 targets, ~60 MB archives, {} MiB/s per connection)",
        LINK_BYTES_PER_SEC >> 20
    );
    println!(
        "  baseline: slowest single download ({slowest_name}, curl) {:.2} s",
        slowest.as_secs_f64()
    );
    println!(
        "  bundle:   {:.2} s wall   ratio {ratio:.2} (target ≤ 1.3){}",
        took.as_secs_f64(),
        verdict(ratio <= 1.3)
    );
    println!(
        "  (--mode download alone: {:.2} s, ratio {:.2})",
        download_only.as_secs_f64(),
        download_only.as_secs_f64() / slowest.as_secs_f64()
    );
    println!(
        "  peak RSS: {:.1} MB (target < 50 MB){}",
        peak_kib as f64 / 1024.0,
        verdict(peak_kib < 50 * 1024)
    );
    println!("  reproduce: cargo xtask bench bundle");
    Ok(vec![
        Figure {
            name: "bundle 5 targets (~60 MB archives)",
            value: format!(
                "{:.2} s (`--mode download` alone {:.2} s)",
                took.as_secs_f64(),
                download_only.as_secs_f64()
            ),
            baseline: format!(
                "slowest single download {:.2} s (curl, {} MiB/s per connection)",
                slowest.as_secs_f64(),
                LINK_BYTES_PER_SEC >> 20
            ),
            ratio: Some(ratio),
            target: "≤ 1.3×",
            met: Some(ratio <= 1.3),
            note: if ratio <= 1.3 {
                String::new()
            } else {
                format!(
                    "missed by {:.1}×: with the default 4 parallel downloads, 5 equal assets take two rounds (a floor near 2× under a \
                     per-connection limit), then every archive is extracted and the bundled archive gzip-compresses the host's three \
                     binaries (~130 MB, stand-ins are unstripped debug builds) at the default level, which dominates \
                     (`--mode download` alone: ratio {:.2}).",
                    ratio / 1.3,
                    download_only.as_secs_f64() / slowest.as_secs_f64()
                )
            },
            command: "cargo xtask bench bundle",
        },
        Figure {
            name: "bundle peak RSS",
            value: format!("{:.1} MB", peak_kib as f64 / 1024.0),
            baseline: "–".into(),
            ratio: None,
            target: "< 50 MB",
            met: Some(peak_kib < 50 * 1024),
            note: String::new(),
            command: "cargo xtask bench bundle",
        },
    ])
}

/// Size of the big sidecar in `bench fetch`.
const FETCH_SIZE: u64 = 150 * 1024 * 1024;

fn bench_fetch() -> anyhow::Result<Vec<Figure>> {
    let openwrk = release_openwrk()?;
    let tmp = tempfile::Builder::new()
        .prefix("openwrk-bench-")
        .tempdir()?;
    let dist = tmp.path().join("dist");
    eprintln!("bench fetch: writing a 150 MB sidecar …");
    openwrk_test_support::fixtures::host_dist(&dist, "1.0.0", 0, FETCH_SIZE)?;
    let mirror = openwrk_test_support::ReleaseHost::mirror(&dist);
    let big = format!(
        "openwork-server-{}",
        openwrk_test_support::fixtures::host_target()
    );
    let url = format!("{}/{big}", mirror.url());

    // Baseline: curl to a file, then the faster of sha256sum and openssl.
    let mut baseline = Duration::MAX;
    let mut baseline_how = "";
    for _ in 0..3 {
        let out = tmp.path().join("curl.out");
        let started = Instant::now();
        let ok = Command::new("curl")
            .args(["-sf", "-o"])
            .arg(&out)
            .arg(&url)
            .status()?
            .success();
        let download = started.elapsed();
        if !ok {
            bail!("curl {url} failed");
        }
        for (how, prog, args) in [
            ("sha256sum", "sha256sum", vec![]),
            ("openssl dgst", "openssl", vec!["dgst", "-sha256"]),
        ] {
            let started = Instant::now();
            if Command::new(prog)
                .args(&args)
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                let total = download + started.elapsed();
                if total < baseline {
                    baseline = total;
                    baseline_how = how;
                }
            }
        }
        std::fs::remove_file(&out)?;
    }

    // First fetch into an empty data dir (manifest + 3 sidecars, the big one dominating).
    let mut first = Duration::MAX;
    let mut peak = 0;
    for i in 0..3 {
        let mut cmd = Command::new(&openwrk);
        cmd.args(["sidecars", "fetch"])
            .env("OPENWRK_DATA_DIR", tmp.path().join(format!("data-{i}")))
            .env("OPENWRK_SIDECAR_BASE_URL", mirror.url())
            .env("CI", "true");
        let (took, kib) = run_measured(cmd)?;
        first = first.min(took);
        peak = peak.max(kib);
    }
    let ratio = first.as_secs_f64() / baseline.as_secs_f64();
    let first_ratio = ratio;
    println!("bench fetch (150 MB sidecar from a loopback mirror, release build)");
    println!(
        "  baseline: curl -o + {baseline_how} {:.3} s (best of 3)",
        baseline.as_secs_f64()
    );
    println!(
        "  first fetch: {:.3} s (best of 3)   ratio {ratio:.2} (target ≤ 1.2){}",
        first.as_secs_f64(),
        verdict(ratio <= 1.2)
    );
    println!(
        "  peak RSS: {:.1} MB (target < 30 MB){}",
        peak as f64 / 1024.0,
        verdict(peak < 30 * 1024)
    );

    // Warm resolution of all three against `openwrk --version`, median of 21 runs each.
    let requests = mirror.requests();
    let data = tmp.path().join("data-0");
    let warm = median_run(21, || {
        let mut c = Command::new(&openwrk);
        c.args(["sidecars", "list"])
            .env("OPENWRK_DATA_DIR", &data)
            .env("OPENWRK_SIDECAR_BASE_URL", mirror.url());
        c
    })?;
    let version = median_run(21, || {
        let mut c = Command::new(&openwrk);
        c.arg("--version");
        c
    })?;
    if mirror.requests() != requests {
        bail!(
            "warm resolution made {} requests",
            mirror.requests() - requests
        );
    }
    let ratio = warm.as_secs_f64() / version.as_secs_f64();
    println!(
        "  warm resolution (sidecars list): {:.1} ms vs openwrk --version {:.1} ms   ratio {ratio:.2} (target ≤ 1.5){}; 0 requests",
        warm.as_secs_f64() * 1e3,
        version.as_secs_f64() * 1e3,
        verdict(ratio <= 1.5)
    );
    println!("  reproduce: cargo xtask bench fetch");
    Ok(vec![
        Figure {
            name: "first fetch of a 150 MB sidecar",
            value: format!("{:.3} s", first.as_secs_f64()),
            baseline: format!("curl -o + {baseline_how} {:.3} s", baseline.as_secs_f64()),
            ratio: Some(first_ratio),
            target: "≤ 1.2×",
            met: Some(first_ratio <= 1.2),
            note: String::new(),
            command: "cargo xtask bench fetch",
        },
        Figure {
            name: "first fetch peak RSS",
            value: format!("{:.1} MB", peak as f64 / 1024.0),
            baseline: "–".into(),
            ratio: None,
            target: "< 30 MB",
            met: Some(peak < 30 * 1024),
            note: String::new(),
            command: "cargo xtask bench fetch",
        },
        Figure {
            name: "warm resolution of all three sidecars",
            value: format!("{:.1} ms, 0 requests", warm.as_secs_f64() * 1e3),
            baseline: format!("`openwrk --version` {:.1} ms", version.as_secs_f64() * 1e3),
            ratio: Some(ratio),
            target: "≤ 1.5×",
            met: Some(ratio <= 1.5),
            note: String::new(),
            command: "cargo xtask bench fetch",
        },
    ])
}

/// The real OpenCode: `OPENWRK_TEST_OPENCODE_BIN`, else the copy `.ci/run` caches.
fn real_opencode() -> Option<std::path::PathBuf> {
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn bench_start() -> anyhow::Result<Vec<Figure>> {
    let Some(opencode) = real_opencode() else {
        let why = "no real OpenCode (set OPENWRK_TEST_OPENCODE_BIN, or run .ci/run once to cache the npm package opencode-linux-x64)";
        println!("bench start: skipped: {why}");
        return Ok(vec![Figure {
            name: "launch to all healthy (real OpenCode)",
            value: "skipped".into(),
            baseline: "–".into(),
            ratio: None,
            target: "≤ 1.2×",
            met: None,
            note: format!("skipped: {why}"),
            command: "cargo xtask bench start",
        }]);
    };
    let bins = demo::build_workspace_bins()?;
    let exe = std::env::consts::EXE_SUFFIX;
    let openwrk = release_openwrk()?;
    let tmp = tempfile::Builder::new()
        .prefix("openwrk-bench-")
        .tempdir()?;
    let home = tmp.path().join("home");
    let workspace = tmp.path().join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let prober = openwrk::host::health::Prober::new()?;
    const RUNS: usize = 5;

    // Baseline: OpenCode alone, probed like openwrk probes it.
    let mut alone = Vec::new();
    for _ in 0..RUNS {
        let port = free_port()?;
        let mut cmd = Command::new(&opencode);
        cmd.args([
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .env("OPENCODE_SERVER_PASSWORD", "bench")
        .current_dir(&workspace)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        openwrk_test_support::private_opencode_env(&mut cmd, &home);
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let endpoint = openwrk::host::health::Endpoint::OpenCode {
            base: format!("http://127.0.0.1:{port}"),
            authorization: openwrk::host::credentials::basic_auth("opencode", "bench"),
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            if prober.probe(&endpoint).await.is_up() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("OpenCode alone was not healthy within 60 s");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
        alone.push(started.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }

    // openwrk serve: launch until the pairing JSON is printed (all healthy), RSS, then a clean stop.
    let (mut healthy, mut stops, mut rss_kib) = (Vec::new(), Vec::new(), 0u64);
    for i in 0..RUNS {
        let mut cmd = Command::new(&openwrk);
        cmd.args([
            "serve",
            "--json",
            "--allow-external",
            "--openwork-port",
            "0",
        ])
        .arg("--opencode-bin")
        .arg(&opencode)
        .arg("--openwork-server-bin")
        .arg(bins.join(format!("standin-openwork-server{exe}")))
        .arg("--owpenbot-bin")
        .arg(bins.join(format!("standin-owpenbot{exe}")))
        .arg("--workspace")
        .arg(&workspace)
        .env("OPENWRK_DATA_DIR", tmp.path().join(format!("data-{i}")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
        openwrk_test_support::private_opencode_env(&mut cmd, &home);
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if serde_json::from_str::<serde_json::Value>(&line).is_err() {
            let _ = child.kill();
            bail!("openwrk serve did not become ready (first stdout line: {line:?})");
        }
        healthy.push(started.elapsed());
        for _ in 0..5 {
            rss_kib = rss_kib.max(vm_rss_kib(child.id()));
            std::thread::sleep(Duration::from_millis(100));
        }
        let stop = Instant::now();
        // kill(1): SIGTERM without adding libc to xtask.
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let status = child.wait()?;
        stops.push(stop.elapsed());
        if !status.success() {
            bail!("openwrk serve exited with {status} after SIGTERM");
        }
    }
    let (alone, healthy, stop) = (median(alone), median(healthy), median(stops));
    let ratio = healthy.as_secs_f64() / alone.as_secs_f64();
    println!(
        "bench start (real OpenCode {}, stand-in OpenWork server and Owpenbot, median of {RUNS})",
        opencode.display()
    );
    println!(
        "  baseline: OpenCode alone to healthy {:.2} s",
        alone.as_secs_f64()
    );
    println!(
        "  openwrk serve to all healthy {:.2} s   ratio {ratio:.2} (target ≤ 1.2){}",
        healthy.as_secs_f64(),
        verdict(ratio <= 1.2)
    );
    println!(
        "  clean stop (SIGTERM to exit) {:.0} ms",
        stop.as_secs_f64() * 1e3
    );
    println!(
        "  openwrk RSS while supervising {:.1} MB (target < 15 MB){}",
        rss_kib as f64 / 1024.0,
        verdict(rss_kib < 15 * 1024)
    );
    println!("  reproduce: cargo xtask bench start");
    Ok(vec![
        Figure {
            name: "launch to all healthy (real OpenCode)",
            value: format!("{:.2} s", healthy.as_secs_f64()),
            baseline: format!("OpenCode alone {:.2} s", alone.as_secs_f64()),
            ratio: Some(ratio),
            target: "≤ 1.2×",
            met: Some(ratio <= 1.2),
            note: String::new(),
            command: "cargo xtask bench start",
        },
        Figure {
            name: "clean stop (SIGTERM to exit)",
            value: format!("{:.0} ms", stop.as_secs_f64() * 1e3),
            baseline: "–".into(),
            ratio: None,
            target: "–",
            met: None,
            note: String::new(),
            command: "cargo xtask bench start",
        },
        Figure {
            name: "openwrk RSS while supervising",
            value: format!("{:.1} MB", rss_kib as f64 / 1024.0),
            baseline: "–".into(),
            ratio: None,
            target: "< 15 MB",
            met: Some(rss_kib < 15 * 1024),
            note: String::new(),
            command: "cargo xtask bench start",
        },
    ])
}

/// Resident set size of a process (Linux `/proc`), 0 elsewhere.
fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Median wall time of `n` runs of a command (output discarded).
fn median_run(n: usize, make: impl Fn() -> Command) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = make();
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let started = Instant::now();
        let status = cmd.status()?;
        times.push(started.elapsed());
        if !status.success() {
            bail!("{:?} failed ({status})", cmd.get_program());
        }
    }
    times.sort();
    Ok(times[n / 2])
}

/// Benchmarks measure optimized code: build xtask (and with it the bundler) in release.
fn release_xtask() -> anyhow::Result<std::path::PathBuf> {
    crate::cargo_build(&["--quiet", "--release", "--package", "xtask"])?;
    Ok(openwrk_test_support::target_dir()
        .join("release")
        .join(format!("xtask{}", std::env::consts::EXE_SUFFIX)))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "  ok"
    } else {
        "  MISSED"
    }
}

/// Runs a command to completion; wall time and its peak RSS in KiB (`/usr/bin/time -f %M`).
pub fn run_measured(cmd: Command) -> anyhow::Result<(Duration, u64)> {
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
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
    timed.stdout(std::process::Stdio::null());
    let started = Instant::now();
    let status = timed
        .status()
        .context("/usr/bin/time is needed to measure peak RSS")?;
    let took = started.elapsed();
    if !status.success() {
        bail!("benchmarked command failed ({status})");
    }
    let text = std::fs::read_to_string(rss_file.path())?;
    let kib = text
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((took, kib))
}
