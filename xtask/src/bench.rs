//! `cargo xtask bench <name>`: benchmarks print a figure, the baseline measured
//! in the same run, the ratio and the target (SPEC §10).

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// Bundle five targets from the loopback host (~60 MB assets).
    Bundle,
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Bundle => anyhow::bail!("bench bundle: not built yet"),
    }
}
