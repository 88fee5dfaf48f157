//! Build-time tasks: `cargo xtask bundle | demo | bench`.

mod bench;
mod bundle;
mod demo;
mod sidecars;

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
    /// Benchmarks (figures with ratios against a baseline measured in the same run).
    Bench {
        #[arg(value_enum)]
        which: bench::Which,
    },
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
                let report = bundle::run(*args).await?;
                bundle::print_summary(&report, &mut std::io::stdout())?;
                Ok(())
            }
            Command::Demo => demo::run().await,
            Command::Bench { which } => bench::run(which).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {}", render(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, one per line, like cargo.
fn render(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    out
}
