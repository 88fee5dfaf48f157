//! Build-time tasks: `cargo xtask bundle | demo | bench`.

mod bench;
mod bundle;
mod demo;
mod repro;
mod sidecars;
mod sign;
mod verify_dist;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "openwrk build tasks", version = openwrk::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve OpenCode, download and verify every sidecar, write dist/.
    Bundle(Box<bundle::BundleArgs>),
    /// Run the main job offline against a loopback release host with stand-in sidecars.
    Demo,
    /// Check a dist/ directory or mirror URL: every asset, SHA256SUMS, signature.
    VerifyDist(verify_dist::VerifyDistArgs),
    /// Generate a minisign key pair for signing manifests (PREFIX.key, PREFIX.pub).
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: std::path::PathBuf,
    },
    /// Benchmarks (figures with ratios against a baseline measured in the same run).
    /// Without a name: every benchmark, written to BENCHMARKS.md.
    Bench {
        #[arg(value_enum)]
        which: Option<bench::Which>,
    },
    /// Bundle twice under another umask, TZ and locale; fail on any byte difference.
    ReproCheck(Box<repro::ReproArgs>),
    /// Write the manifest's JSON Schema, generated from its Rust types, to
    /// manifests/openwrk-sidecars.schema.json (--check: fail if it differs).
    Schema {
        #[arg(long)]
        check: bool,
    },
}

/// `cargo xtask schema [--check]`.
fn schema(check: bool) -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace");
    let path = root.join("manifests/openwrk-sidecars.schema.json");
    let generated = openwrk::supply::manifest::schema::manifest_schema_json();
    if check {
        let committed = std::fs::read_to_string(&path)?;
        anyhow::ensure!(
            committed == generated,
            "{} differs from the schema generated from the manifest's types\nhint: run `cargo xtask schema` and commit the result",
            path.display()
        );
        println!("{} is up to date", path.display());
    } else {
        std::fs::write(&path, generated)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bundle(args) => {
                // Interrupted, the unfinished bundle's work dirs are dropped
                // (removed) with the future; the exit code says why (SPEC §9).
                let report = tokio::select! {
                    r = bundle::run(*args) => r?,
                    n = interrupted() => {
                        eprintln!("interrupted; removed the unfinished bundle");
                        std::process::exit(128 + n);
                    }
                };
                bundle::print_summary(&report, &mut std::io::stdout())?;
                Ok(())
            }
            Command::Demo => demo::run().await,
            Command::VerifyDist(args) => verify_dist::run(args).await,
            Command::Keygen { out } => {
                let (key, public) = sign::keygen(&out)?;
                println!(
                    "secret key: {} (keep it secret; 0600)
public key: {}",
                    key.display(),
                    public.display()
                );
                Ok(())
            }
            Command::Bench { which } => bench::run(which.unwrap_or(bench::Which::All)).await,
            Command::ReproCheck(args) => repro::run(*args),
            Command::Schema { check } => schema(check),
        }
    });
    if let Err(e) = result {
        eprintln!("error: {}", openwrk::sanitize::for_output(&render(&e)));
        std::process::exit(exit_code(&e));
    }
}

/// SPEC §9 exit codes from the first typed library error in the chain.
fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<openwrk::supply::archive::ArchiveError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<openwrk::supply::download::DownloadError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<openwrk::supply::github::GithubError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<openwrk::supply::platform::PlatformError>() {
            return match e {
                openwrk::supply::platform::PlatformError::UnknownTarget(_) => 2,
                _ => 3,
            };
        }
    }
    1
}

/// SIGINT or SIGTERM: the signal's number.
async fn interrupted() -> i32 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        2
    }
}

/// Runs `cargo build <args>` in the workspace root.
pub fn cargo_build(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(cargo)
        .arg("build")
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run cargo: {e}"))?;
    if !status.success() {
        anyhow::bail!("cargo build {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The error and its causes, one per line, like cargo.
fn render(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    out
}
