//! `cargo xtask demo`: the main job, offline. A loopback release host serves a
//! fake OpenCode release built from the stand-in sidecars of this workspace
//! (never shipped), and the real bundler runs against it.

use std::path::{Path, PathBuf};

use anyhow::bail;
use openwrk_test_support::{fixtures, ReleaseHost};

use crate::bundle::{self, BundleArgs, Mode};

/// Builds the stand-in sidecars and openwrk (debug profile) and returns the target dir.
pub fn build_workspace_bins() -> anyhow::Result<PathBuf> {
    crate::cargo_build(&[
        "--quiet",
        "--package",
        "openwrk-test-support",
        "--bins",
        "--package",
        "openwrk",
        "--bin",
        "openwrk",
    ])?;
    Ok(openwrk_test_support::target_dir().join("debug"))
}

pub const DEMO_OPENCODE_TAG: &str = "v0.0.1";
pub const DEMO_REPO: &str = "anomalyco/opencode";

/// Publishes a fake OpenCode release and writes a prebuilt dir; returns (host, prebuilt dir, openwrk bin dir).
pub fn loopback_release(
    dir: &Path,
    bins: &Path,
    pad: u64,
) -> anyhow::Result<(ReleaseHost, PathBuf, PathBuf)> {
    let exe = std::env::consts::EXE_SUFFIX;
    let host = ReleaseHost::start();
    let release_dir = dir.join("release");
    std::fs::create_dir_all(&release_dir)?;
    let opencode = bins.join(format!("standin-opencode{exe}"));
    let release =
        fixtures::opencode_release(&release_dir, DEMO_OPENCODE_TAG, Some(&opencode), pad)?;
    host.add_release(DEMO_REPO, release);
    let server = bins.join(format!("standin-openwork-server{exe}"));
    let bot = bins.join(format!("standin-owpenbot{exe}"));
    let prebuilt = fixtures::prebuilt_dir(
        &dir.join("prebuilt"),
        "0.0.0-standin",
        &[("openwork-server", &server), ("owpenbot", &bot)],
        pad,
    )?;
    let bin_dir = dir.join("openwrk-bin");
    std::fs::create_dir_all(&bin_dir)?;
    let host_target = fixtures::host_target();
    std::fs::copy(
        bins.join(format!("openwrk{exe}")),
        bin_dir.join(format!("openwrk-{host_target}{exe}")),
    )?;
    Ok((host, prebuilt, bin_dir))
}

pub async fn run() -> anyhow::Result<()> {
    eprintln!("demo: building the stand-in sidecars and openwrk …");
    let bins = build_workspace_bins()?;
    let tmp = tempfile::Builder::new().prefix("openwrk-demo-").tempdir()?;
    let (host, prebuilt, bin_dir) = loopback_release(tmp.path(), &bins, 0)?;
    eprintln!(
        "demo: loopback GitHub API at {} (stand-in OpenCode release {DEMO_OPENCODE_TAG})",
        host.api_url()
    );
    let out = tmp.path().join("dist");
    // A throwaway signing key: the manifest is signed and openwrk checks it.
    let (key, public) = crate::sign::keygen(&tmp.path().join("demo-signing"))?;
    let args = BundleArgs {
        out: out.clone(),
        targets: "all".into(),
        mode: Mode::Both,
        prebuilt: Some(prebuilt),
        openwrk_bin_dir: Some(bin_dir),
        jobs: None,
        opencode_version: None,
        opencode_repo: Some(DEMO_REPO.into()),
        github_api_url: host.api_url(),
        github_token: None,
        source_date_epoch: Some(1_700_000_000),
        config: crate::sidecars::default_path(),
        sign: Some(key),
    };
    let report = bundle::run(args).await?;
    println!(
        "\n== {} ==",
        out.join(openwrk::supply::manifest::MANIFEST_FILE).display()
    );
    print!("{}", report.manifest.to_json());
    println!("\n== summary ==");
    bundle::print_summary(&report, &mut std::io::stdout())?;
    println!("\n== dist/ ==");
    let mut names: Vec<_> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        println!("  {n}");
    }
    println!(
        "\ndemo: {} requests served by the loopback release host",
        host.requests()
    );

    // Run time: dist/ served as a static mirror, the real openwrk fetching from it.
    let mirror = ReleaseHost::mirror(&out);
    let openwrk = bins.join(format!("openwrk{}", std::env::consts::EXE_SUFFIX));
    let data = tmp.path().join("data");
    let pubkey = std::fs::read_to_string(&public)?;
    println!(
        "\ndemo: openwrk requires the manifest to be signed with {}",
        public.display()
    );
    let run = |args: &[&str]| -> anyhow::Result<()> {
        println!(
            "\n$ openwrk {} --sidecar-base-url {}",
            args.join(" "),
            mirror.url()
        );
        let status = std::process::Command::new(&openwrk)
            .args(args)
            .env("OPENWRK_DATA_DIR", &data)
            .env("OPENWRK_SIDECAR_BASE_URL", mirror.url())
            .env("OPENWRK_MANIFEST_PUBKEY", &pubkey)
            .status()?;
        if !status.success() {
            bail!("openwrk {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(&["sidecars", "fetch"])?;
    run(&["sidecars", "verify"])?;
    run(&["sidecars", "list"])?;
    // The job users run every day: bring the host up, check it, print the pairing details, stop.
    let workspace = tmp.path().join("workspace");
    std::fs::create_dir_all(&workspace)?;
    run(&[
        "serve",
        "--check",
        "--check-events",
        "--workspace",
        workspace.to_str().unwrap_or("."),
    ])?;
    println!(
        "\ndemo: the mirror served {} requests; sidecars cached under {}; nothing left the machine",
        mirror.requests(),
        data.join("sidecars").display()
    );
    Ok(())
}
