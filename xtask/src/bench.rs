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
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Bundle => bench_bundle(),
        Which::Fetch => bench_fetch(),
    }
}

/// Size of the noise appended to each stand-in binary: ~60 MB archives.
const ASSET_PAD: u64 = 60 * 1024 * 1024;
/// Per-connection bandwidth of the loopback host, a stand-in for a CDN link
/// (unthrottled loopback would measure memcpy, not downloads).
const LINK_BYTES_PER_SEC: u64 = 100 * 1024 * 1024;

fn bench_bundle() -> anyhow::Result<()> {
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
    Ok(())
}

/// Size of the big sidecar in `bench fetch`.
const FETCH_SIZE: u64 = 150 * 1024 * 1024;

fn bench_fetch() -> anyhow::Result<()> {
    crate::cargo_build(&[
        "--quiet",
        "--release",
        "--package",
        "openwrk",
        "--bin",
        "openwrk",
    ])?;
    let openwrk = openwrk_test_support::target_dir()
        .join("release")
        .join(format!("openwrk{}", std::env::consts::EXE_SUFFIX));
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
    Ok(())
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
