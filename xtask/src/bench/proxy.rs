//! `bench proxy`: the router daemon's reverse proxy (SPEC §6) in front of the
//! real OpenCode. 2,000 `GET /w/<id>/path` requests at concurrency 16 through
//! the daemon, against the same requests (`GET /path?directory=…`, basic
//! auth) sent to the daemon's own OpenCode directly, with the same client
//! (16 keep-alive connections); p50 and p99 latency of each, and the
//! daemon's peak RSS. The two are measured alternately, twice.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{real_opencode, release_openwrk, verdict, vm_hwm_kib, Figure};

const CMD: &str = "cargo xtask bench proxy";
const REQUESTS: usize = 2000;
/// Requests per side before the other side's turn.
const BLOCK: usize = 200;
const CONCURRENCY: usize = 16;

/// Latencies of `n` GETs of `url` at `CONCURRENCY`, sorted.
async fn load(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, auth, next, out) = (
            client.clone(),
            url.to_string(),
            auth.to_string(),
            next.clone(),
            out.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let started = Instant::now();
                let response = client
                    .get(&url)
                    .header("authorization", &auth)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.bytes().await?;
                let took = started.elapsed();
                if !status.is_success() {
                    bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
                }
                out.lock().expect("not poisoned").push(took);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut v = std::mem::take(&mut *out.lock().expect("not poisoned"));
    v.sort();
    Ok(v)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub async fn bench() -> anyhow::Result<Vec<Figure>> {
    println!("bench proxy (router daemon in front of the real OpenCode; {REQUESTS} GET /w/<id>/path at concurrency {CONCURRENCY})");
    let Some(opencode) = real_opencode() else {
        return Ok(vec![Figure::skipped(
            "daemon proxy latency",
            "≤ 1.15× p50, ≤ 1.3× p99",
            "no real OpenCode (set OPENWRK_TEST_OPENCODE_BIN, or run .ci/run once to cache the npm package opencode-linux-x64)",
            CMD,
        )]);
    };
    let openwrk = release_openwrk()?;
    let tmp = tempfile::Builder::new()
        .prefix("openwrk-bench-")
        .tempdir()?;
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let workspace = tmp.path().join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let workspace = workspace.canonicalize()?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = Command::new(&openwrk);
        cmd.arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdin(Stdio::null());
        openwrk_test_support::private_opencode_env(&mut cmd, &home);
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "openwrk {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let opencode_arg = opencode.display().to_string();
    let url = run(&["daemon", "start", "--opencode-bin", &opencode_arg])?;
    let result = async {
        let token = std::fs::read_to_string(data.join("daemon.token"))?;
        let id = run(&["workspace", "add", &workspace.display().to_string()])?;
        let status: serde_json::Value =
            serde_json::from_str(&run(&["daemon", "status", "--json"])?)?;
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("daemon.json"))?)?;
        let daemon_pid = record["pid"].as_u64().context("daemon pid")? as u32;
        let oc_pid = status["opencode"]["pid"]
            .as_u64()
            .or_else(|| record["opencode"]["pid"].as_u64())
            .context("OpenCode pid")? as u32;
        let oc_url = status["opencode"]["url"]
            .as_str()
            .or_else(|| record["opencode"]["url"].as_str())
            .context("OpenCode url")?
            .to_string();
        // The daemon hands OpenCode its generated password in the environment only.
        let environ = std::fs::read(format!("/proc/{oc_pid}/environ"))
            .context("reading OpenCode's environment (Linux /proc) for its password")?;
        let password = environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"OPENCODE_SERVER_PASSWORD="))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .context("OpenCode's password")?;
        let basic = openwrk::host::credentials::basic_auth("opencode", &password);
        let bearer = format!("Bearer {}", token.trim());
        let proxied = format!("{url}/w/{id}/path");
        let direct = format!(
            "{oc_url}/path?directory={}",
            workspace.display().to_string().replace('/', "%2F")
        );
        openwrk::install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()?;
        // Warm both paths (connections, OpenCode's instance for the directory).
        load(&client, &direct, &basic, 200).await?;
        load(&client, &proxied, &bearer, 200).await?;
        let (mut d, mut p) = (Vec::new(), Vec::new());
        // Twice REQUESTS each, alternating in blocks of 200: OpenCode's own
        // latency drifts during a run, and long blocks would hand the drift
        // to one side.
        for _ in 0..(2 * REQUESTS / BLOCK) {
            d.extend(load(&client, &direct, &basic, BLOCK).await?);
            p.extend(load(&client, &proxied, &bearer, BLOCK).await?);
        }
        d.sort();
        p.sort();
        let hwm = vm_hwm_kib(daemon_pid);
        anyhow::Ok((d, p, hwm))
    }
    .await;
    let _ = run(&["daemon", "stop"]);
    let (d, p, hwm) = result?;
    let (d50, d99, p50, p99) = (pct(&d, 0.5), pct(&d, 0.99), pct(&p, 0.5), pct(&p, 0.99));
    let (r50, r99) = (
        p50.as_secs_f64() / d50.as_secs_f64(),
        p99.as_secs_f64() / d99.as_secs_f64(),
    );
    println!(
        "  baseline: OpenCode directly: p50 {:.2} ms, p99 {:.2} ms",
        ms(d50),
        ms(d99)
    );
    println!(
        "  through the daemon: p50 {:.2} ms (ratio {r50:.2}, target ≤ 1.15){}, p99 {:.2} ms (ratio {r99:.2}, target ≤ 1.3){}",
        ms(p50),
        verdict(r50 <= 1.15),
        ms(p99),
        verdict(r99 <= 1.3)
    );
    println!(
        "  daemon peak RSS {:.1} MB (target < 20 MB){}",
        hwm as f64 / 1024.0,
        verdict(hwm < 20 * 1024)
    );
    println!("  reproduce: {CMD}");
    let n = d.len();
    // On 2 cores OpenCode is CPU-bound under this load: every request the
    // daemon relays takes its CPU from the cores OpenCode answers on.
    let why = "missed: at concurrency 16 OpenCode keeps both cores busy (its direct latency is queueing behind its own \
               CPU), so the daemon's relay work (accepting, checking the token, forwarding the request and streaming \
               the answer back) is time OpenCode waits for a core; the ratios move between runs by more than the \
               margin (rerun `cargo xtask bench proxy` to see the spread)";
    let noted = |f: Figure, met: bool| if met { f } else { f.note(why) };
    Ok(vec![
        noted(
            Figure::ratio(
                "daemon proxy p50 latency (2,000 GET /w/<id>/path, concurrency 16, ×2)",
                format!("{:.2} ms", ms(p50)),
                format!("OpenCode directly {:.2} ms ({n} requests)", ms(d50)),
                r50,
                1.15,
                CMD,
            ),
            r50 <= 1.15,
        ),
        noted(
            Figure::ratio(
                "daemon proxy p99 latency",
                format!("{:.2} ms", ms(p99)),
                format!("OpenCode directly {:.2} ms", ms(d99)),
                r99,
                1.3,
                CMD,
            ),
            r99 <= 1.3,
        ),
        Figure::limit(
            "daemon peak RSS (VmHWM, after the load)",
            format!("{:.1} MB", hwm as f64 / 1024.0),
            "< 20 MB",
            hwm < 20 * 1024,
            CMD,
        ),
    ])
}
