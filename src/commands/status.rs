//! `openwrk status --openwork-url URL --opencode-url URL`: health, version and
//! latency of a running OpenWork server and OpenCode, probed like `start`
//! probes them (fresh connection, 1 s budget each). Exit 1 if any is down.

use std::time::Instant;

use serde_json::json;

use super::Failure;
use crate::cli::{Global, StatusArgs};
use crate::host::health::{Endpoint, Probe, Prober};
use crate::host::remote::base_url;

struct Checked {
    name: &'static str,
    url: String,
    probe: Probe,
    latency_ms: u128,
}

async fn check(prober: &Prober, name: &'static str, endpoint: Endpoint) -> Checked {
    let started = Instant::now();
    let probe = prober.probe(&endpoint).await;
    Checked {
        name,
        url: endpoint.url(),
        probe,
        latency_ms: started.elapsed().as_millis(),
    }
}

pub async fn run(global: &Global, args: StatusArgs) -> Result<i32, Failure> {
    let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let (openwork, opencode) = (given(&args.openwork_url), given(&args.opencode_url));
    if openwork.is_none() && opencode.is_none() {
        return Err(Failure {
            message: "nothing to check: no --openwork-url or --opencode-url given\nhint: pass the URLs `openwrk serve` printed (OPENWRK_OPENWORK_URL works too); `openwrk daemon status` checks the router daemon".into(),
            code: 2,
        });
    }
    let openwork = openwork
        .map(|u| base_url(&u, "--openwork-url"))
        .transpose()?;
    let opencode = opencode
        .map(|u| base_url(&u, "--opencode-url"))
        .transpose()?;
    let prober = Prober::new().map_err(|e| Failure {
        message: e.to_string(),
        code: 1,
    })?;
    let username = given(&args.opencode_username).unwrap_or_else(|| "opencode".into());
    let password = args.opencode_password.clone().unwrap_or_default();
    let authorization = crate::host::credentials::basic_auth(&username, &password);
    let (ow, oc) = tokio::join!(
        async {
            match &openwork {
                Some(base) => Some(
                    check(
                        &prober,
                        "openwork-server",
                        Endpoint::OpenWork { base: base.clone() },
                    )
                    .await,
                ),
                None => None,
            }
        },
        async {
            match &opencode {
                Some(base) => Some(
                    check(
                        &prober,
                        "opencode",
                        Endpoint::OpenCode {
                            base: base.clone(),
                            authorization: authorization.clone(),
                        },
                    )
                    .await,
                ),
                None => None,
            }
        }
    );
    let checked: Vec<Checked> = [ow, oc].into_iter().flatten().collect();
    let healthy = checked.iter().all(|c| c.probe.is_up());
    // Sandbox mode (SPEC §5.9): from the record of the run (or daemon) behind these URLs.
    let urls: Vec<String> = [openwork.clone(), opencode.clone()]
        .into_iter()
        .flatten()
        .collect();
    let data_dir = global
        .data_dir
        .clone()
        .unwrap_or_else(crate::fsutil::default_data_dir);
    let sandbox = crate::host::sandbox::for_urls(&data_dir, &urls);
    if global.json {
        let mut doc = json!({ "healthy": healthy });
        for c in &checked {
            let (up, version, error) = match &c.probe {
                Probe::Healthy { version } => (true, version.clone(), None),
                Probe::Degraded { detail } => (true, None, Some(detail.clone())),
                Probe::Down { reason } => (false, None, Some(reason.clone())),
            };
            let key = if c.name == "opencode" {
                "opencode"
            } else {
                "openwork"
            };
            doc[key] = json!({
                "url": c.url,
                "healthy": up,
                "version": version,
                "latencyMs": c.latency_ms as u64,
                "error": error,
            });
        }
        doc["sandbox"] = json!(sandbox);
        println!("{doc}");
    } else {
        let rows: Vec<[String; 5]> = checked
            .iter()
            .map(|c| {
                let (state, what) = match &c.probe {
                    Probe::Healthy { version } => (
                        "healthy",
                        format!("version {}", version.as_deref().unwrap_or("unknown")),
                    ),
                    Probe::Degraded { detail } => ("degraded", detail.clone()),
                    Probe::Down { reason } => ("unhealthy", reason.clone()),
                };
                [
                    c.name.to_string(),
                    state.to_string(),
                    c.url.clone(),
                    what,
                    format!("{} ms", c.latency_ms),
                ]
            })
            .collect();
        print!(
            "{}",
            super::workspace::table(&["SERVICE", "STATE", "URL", "DETAIL", "LATENCY"], &rows)
        );
        if let Some(s) = &sandbox {
            println!("sandbox: {}", s.describe());
        }
    }
    for c in checked.iter().filter(|c| !c.probe.is_up()) {
        let Probe::Down { reason } = &c.probe else {
            continue;
        };
        let hint = if reason.contains("401") {
            "pass the OpenCode credentials `openwrk serve` printed (OPENWRK_OPENCODE_USERNAME / OPENWRK_OPENCODE_PASSWORD)"
        } else {
            "check the URL and that the service runs (`openwrk serve` prints both URLs)"
        };
        eprintln!(
            "error: {} at {} is unhealthy: {reason}\nhint: {hint}",
            c.name, c.url
        );
    }
    Ok(if healthy { 0 } else { 1 })
}
