//! `cargo xtask repro-check`: proof that `cargo xtask bundle` is reproducible
//! (SPEC §2.4). The real bundler runs twice, as a child process, from the same
//! inputs and `SOURCE_DATE_EPOCH` into two different temporary directories,
//! the second time under another umask, TZ and locale; the two `dist/`
//! directories must hold the same file names with byte-identical contents.
//!
//! By default the inputs are the loopback release host of `test-support` with
//! the stand-in sidecars (offline, like `cargo xtask demo`). `--prebuilt` and
//! `--openwrk-bin-dir` point it at a release's real inputs instead; OpenCode
//! must then be pinned, since two resolutions of "latest" may differ.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::ValueEnum;
use openwrk::supply::github::VersionRequest;
use openwrk::supply::platform::Target;
use openwrk_test_support::ReleaseHost;

mod compare;

use compare::compare_dirs;

use crate::bundle::{human, Mode};
use crate::demo;

#[derive(Debug, Clone, clap::Args)]
pub struct ReproArgs {
    /// Real inputs: directory of prebuilt `openwork-server-<target>[.exe]`,
    /// `owpenbot-<target>[.exe]` and `VERSION` (as for `bundle --prebuilt`).
    /// Without it the check runs offline against the loopback release host
    /// with the stand-in sidecars.
    #[arg(long)]
    pub prebuilt: Option<PathBuf>,
    /// Compiled `openwrk-<target>[.exe]` to bundle. Required with
    /// `--prebuilt`; in the loopback check it replaces the debug build.
    #[arg(long)]
    pub openwrk_bin_dir: Option<PathBuf>,
    /// Loopback check only: a directory that already holds the built stand-ins
    /// (`standin-opencode`, `standin-openwork-server`, `standin-owpenbot`) and
    /// `openwrk`, so nothing is built (default: build them with cargo).
    #[arg(long, env = "OPENWRK_STANDIN_BINS")]
    pub standin_bins: Option<PathBuf>,
    /// Comma-separated target ids, or `all` (passed to `bundle --targets`).
    #[arg(long, default_value = "all")]
    pub targets: String,
    /// Passed to `bundle --mode`.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// The timestamp both runs share (`generatedAt`, archive mtimes).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 1_700_000_000)]
    pub source_date_epoch: i64,
    /// OpenCode to bundle with real inputs: `1.2.3` or `v1.2.3`; `latest` is
    /// refused. Ignored by the loopback check (it serves one stand-in release).
    #[arg(long, env = "OPENCODE_VERSION")]
    pub opencode_version: Option<String>,
    /// Once both runs match, move the first run's dist/ here (replacing it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep both runs' directories (and print where they are) even on success.
    #[arg(long)]
    pub keep: bool,
}

/// The conditions of one bundle run. They differ in everything SPEC §2.4 says
/// the output must not depend on.
struct Conditions {
    umask: &'static str,
    tz: &'static str,
    locale: &'static str,
    /// Temp dir prefix; the two differ in length so embedded paths show up.
    prefix: &'static str,
}

const RUNS: [Conditions; 2] = [
    Conditions {
        umask: "022",
        tz: "UTC",
        locale: "C",
        prefix: ".openwrk-repro-1-",
    },
    Conditions {
        umask: "077",
        tz: "Asia/Kathmandu",
        locale: "C.UTF-8",
        prefix: ".openwrk-repro-second-run-",
    },
];

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if cfg!(unix) {
            write!(f, "umask {}, ", self.umask)?;
        }
        write!(f, "TZ={}, LC_ALL={}", self.tz, self.locale)
    }
}

/// What the two runs bundle from. The loopback host lives as long as this.
enum Inputs {
    Loopback {
        _fixtures: tempfile::TempDir,
        host: ReleaseHost,
        prebuilt: PathBuf,
        bin_dir: PathBuf,
    },
    Real {
        prebuilt: PathBuf,
        bin_dir: PathBuf,
        opencode: String,
    },
}

pub fn run(args: ReproArgs) -> anyhow::Result<()> {
    let targets = Target::parse_list(&args.targets)?;
    let inputs = prepare(&args, &targets)?;
    let mut bundle_args = bundle_args(&args, &inputs);
    // Both runs sign with one throwaway key: signatures are deterministic, so
    // the .minisig and the archives carrying it must match byte for byte too.
    let key_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let key = crate::sign::throwaway_key(key_dir.path())?;
    bundle_args.push("--sign".into());
    bundle_args.push(key.into_os_string());
    let exe = std::env::current_exe().context("cannot locate the xtask executable")?;
    let parent = match &args.out {
        Some(out) => {
            let parent = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            parent
        }
        None => std::env::temp_dir(),
    };

    let mut dists = Vec::new();
    let mut dirs = Vec::new();
    for (i, cond) in RUNS.iter().enumerate() {
        let n = i + 1;
        let dir = tempfile::Builder::new()
            .prefix(cond.prefix)
            .tempdir_in(&parent)
            .with_context(|| {
                format!(
                    "cannot create a temporary directory in {}",
                    parent.display()
                )
            })?;
        let dist = dir.path().join("dist");
        eprintln!("repro-check: run {n} ({cond}) → {}", dist.display());
        let started = Instant::now();
        let loopback = matches!(inputs, Inputs::Loopback { .. });
        bundle_once(
            &exe,
            &bundle_args,
            loopback,
            cond,
            n,
            &dist,
            args.source_date_epoch,
        )?;
        eprintln!(
            "repro-check: run {n} finished in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        dists.push(dist);
        dirs.push(dir);
    }

    let report = compare_dirs(&dists[0], &dists[1])?;
    if !report.differences.is_empty() {
        let kept: Vec<PathBuf> = dirs.into_iter().map(|d| d.keep()).collect();
        let mut msg = format!(
            "the two bundles differ: {} difference(s) among {} files (SOURCE_DATE_EPOCH={})",
            report.differences.len(),
            report.files,
            args.source_date_epoch
        );
        for d in &report.differences {
            msg.push_str(&format!("\n  {d}"));
        }
        for (n, cond) in RUNS.iter().enumerate() {
            msg.push_str(&format!(
                "\n  run {}: {cond}: {}",
                n + 1,
                kept[n].join("dist").display()
            ));
        }
        msg.push_str(
            "\nhint: both runs are kept for inspection; `cmp -l A B | head` or `diffoscope A B` \
             shows what changed. Something in the bundler depends on the umask, TZ, locale, \
             the output path or the clock",
        );
        bail!(msg);
    }

    println!(
        "repro-check: byte-identical: {} files compared ({}) between 2 runs with SOURCE_DATE_EPOCH={}",
        report.files,
        human(report.bytes),
        args.source_date_epoch
    );
    for (n, cond) in RUNS.iter().enumerate() {
        println!("  run {}: {cond}", n + 1);
    }
    if let Some(note) = mode_note(&dists) {
        println!("  {note}");
    }
    println!("  both runs signed with one throwaway key: the .minisig and the archives carrying it compared too");
    if let Inputs::Loopback { host, .. } = &inputs {
        println!(
            "  inputs: loopback release host {} (stand-in OpenCode {}), stand-in sidecars",
            host.api_url(),
            demo::DEMO_OPENCODE_TAG
        );
    }

    if let Some(out) = &args.out {
        replace_with(&dists[0], out)?;
        println!("  kept run 1's dist/ at {}", out.display());
    }
    if args.keep {
        for (n, dir) in dirs.into_iter().enumerate() {
            println!("  kept run {}: {}", n + 1, dir.keep().display());
        }
    }
    Ok(())
}

/// Checks the flags and sets up the inputs (building and starting the loopback host when needed).
fn prepare(args: &ReproArgs, targets: &[Target]) -> anyhow::Result<Inputs> {
    if let Some(dir) = &args.openwrk_bin_dir {
        require_host_openwrk(dir, targets, args.mode)?;
    }
    let Some(prebuilt) = &args.prebuilt else {
        let bins = match &args.standin_bins {
            Some(dir) => {
                for name in [
                    "standin-opencode",
                    "standin-openwork-server",
                    "standin-owpenbot",
                    "openwrk",
                ] {
                    let file = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
                    if !file.is_file() {
                        bail!(
                            "--standin-bins {}: missing {}\nhint: build them with `cargo build -p openwrk-test-support --bins -p openwrk --bin openwrk` and pass target/debug, or drop the flag to build them",
                            dir.display(),
                            file.display()
                        );
                    }
                }
                dir.clone()
            }
            None => {
                eprintln!("repro-check: building the stand-in sidecars and openwrk …");
                demo::build_workspace_bins()?
            }
        };
        let fixtures = tempfile::Builder::new()
            .prefix("openwrk-repro-inputs-")
            .tempdir()?;
        let (host, prebuilt, bin_dir) = demo::loopback_release(fixtures.path(), &bins, 0)?;
        eprintln!(
            "repro-check: loopback GitHub API at {} (stand-in OpenCode release {})",
            host.api_url(),
            demo::DEMO_OPENCODE_TAG
        );
        return Ok(Inputs::Loopback {
            _fixtures: fixtures,
            host,
            prebuilt,
            bin_dir: args.openwrk_bin_dir.clone().unwrap_or(bin_dir),
        });
    };

    if !prebuilt.is_dir() {
        bail!(
            "--prebuilt {} is not a directory\nhint: it holds openwork-server-<target>[.exe], owpenbot-<target>[.exe] and VERSION",
            prebuilt.display()
        );
    }
    let bin_dir = args.openwrk_bin_dir.clone().ok_or_else(|| {
        anyhow!(
            "--prebuilt needs --openwrk-bin-dir too\nhint: build openwrk once with `ci/build.sh --host-only --out DIR` and pass --openwrk-bin-dir DIR (otherwise each run would build its own)"
        )
    })?;
    let opencode = pinned_opencode(args.opencode_version.as_deref())?;
    Ok(Inputs::Real {
        prebuilt: prebuilt.clone(),
        bin_dir,
        opencode,
    })
}

/// With real inputs OpenCode must be an exact version: "latest" could resolve
/// differently for the two runs, and the check would prove nothing.
fn pinned_opencode(value: Option<&str>) -> anyhow::Result<String> {
    let hint = "hint: pin it, e.g. OPENCODE_VERSION=v1.2.3 cargo xtask repro-check --prebuilt DIR --openwrk-bin-dir DIR (two resolutions of `latest` can differ)";
    let value = match value.map(str::trim) {
        None | Some("") => bail!(
            "repro-check with real inputs needs a pinned OpenCode version, and OPENCODE_VERSION is unset\n{hint}"
        ),
        Some(v) => v,
    };
    match value.parse::<VersionRequest>() {
        Ok(VersionRequest::Exact(v)) => Ok(v.to_string()),
        Ok(VersionRequest::Latest) => bail!(
            "repro-check with real inputs refuses OPENCODE_VERSION=`{value}`: the two runs could resolve different releases\n{hint}"
        ),
        Err(e) => Err(anyhow!(e)),
    }
}

/// A bin dir given explicitly must hold the host's openwrk when a bundled
/// archive for the host is wanted; otherwise each bundle run would build one.
fn require_host_openwrk(dir: &Path, targets: &[Target], mode: Mode) -> anyhow::Result<()> {
    if mode == Mode::Download {
        return Ok(());
    }
    let Ok(host) = Target::host() else {
        return Ok(());
    };
    let file = dir.join(host.prebuilt_file("openwrk"));
    if targets.contains(&host) && !file.is_file() {
        bail!(
            "--openwrk-bin-dir {} has no {}\nhint: build it first with `ci/build.sh --host-only --out {}`",
            dir.display(),
            host.prebuilt_file("openwrk"),
            dir.display()
        );
    }
    Ok(())
}

/// The `bundle` arguments both runs share (everything but `--out`).
fn bundle_args(args: &ReproArgs, inputs: &Inputs) -> Vec<OsString> {
    let mode = args
        .mode
        .to_possible_value()
        .expect("modes have names")
        .get_name()
        .to_string();
    let mut out: Vec<OsString> = vec![
        "--targets".into(),
        args.targets.clone().into(),
        "--mode".into(),
        mode.into(),
        "--source-date-epoch".into(),
        args.source_date_epoch.to_string().into(),
    ];
    let (prebuilt, bin_dir) = match inputs {
        Inputs::Loopback {
            host,
            prebuilt,
            bin_dir,
            ..
        } => {
            let tag = demo::DEMO_OPENCODE_TAG;
            out.extend(
                [
                    "--github-api-url",
                    &host.api_url(),
                    "--opencode-repo",
                    demo::DEMO_REPO,
                    "--opencode-version",
                    tag,
                ]
                .map(OsString::from),
            );
            (prebuilt, bin_dir)
        }
        Inputs::Real {
            prebuilt,
            bin_dir,
            opencode,
        } => {
            out.extend(["--opencode-version".into(), opencode.into()]);
            (prebuilt, bin_dir)
        }
    };
    out.extend([
        "--prebuilt".into(),
        absolute(prebuilt).into(),
        "--openwrk-bin-dir".into(),
        absolute(bin_dir).into(),
    ]);
    out
}

/// Runs `xtask bundle` once under `cond`, its output prefixed with the run number.
/// Its working directory is the run's own temporary directory (`dist`'s parent).
fn bundle_once(
    exe: &Path,
    args: &[OsString],
    loopback: bool,
    cond: &Conditions,
    n: usize,
    dist: &Path,
    epoch: i64,
) -> anyhow::Result<()> {
    let cwd = dist.parent().unwrap_or(Path::new("."));
    let mut cmd = if cfg!(unix) {
        // The umask is set by the shell right before it becomes the bundler.
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("umask {} && exec \"$0\" \"$@\"", cond.umask))
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.arg("bundle")
        .arg("--out")
        .arg(dist)
        .args(args)
        .current_dir(cwd)
        .env("TZ", cond.tz)
        .env("LC_ALL", cond.locale)
        .env("LANG", cond.locale)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        // Plain progress lines, no bars.
        .env("CI", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The runs sign with the throwaway key given by flag, never the caller's.
    for var in [
        "OPENWRK_SIGNING_KEY",
        "OPENWRK_SIGNING_KEY_FILE",
        "OPENWRK_SIGNING_KEY_PASSWORD",
    ] {
        cmd.env_remove(var);
    }
    if loopback {
        // Nothing about the loopback check comes from the caller's environment.
        for var in [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "OPENCODE_VERSION",
            "OPENWRK_OPENCODE_REPO",
            "OPENWRK_GITHUB_API_URL",
        ] {
            cmd.env_remove(var);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {} bundle", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let forward = |stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("  run {n} | {line}");
            }
        })
    };
    let threads = [forward(Box::new(stdout)), forward(Box::new(stderr))];
    let status = child.wait()?;
    for t in threads {
        let _ = t.join();
    }
    if !status.success() {
        bail!(
            "bundle run {n} ({cond}) failed ({status})\nhint: its output is above (lines starting with `run {n} |`); the bundler must succeed before its output can be compared"
        );
    }
    if !dist.is_dir() {
        bail!(
            "bundle run {n} succeeded but wrote no {}\nhint: this is a bug in `cargo xtask bundle --out`",
            dist.display()
        );
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The bundler gives dist/ fixed modes (0755/0644) whatever the umask; the
/// note shows the two runs agree on them too.
#[cfg(unix)]
fn mode_note(dists: &[PathBuf]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let modes: Vec<u32> = dists
        .iter()
        .map(|d| std::fs::metadata(d.join("SHA256SUMS")).map(|m| m.permissions().mode() & 0o777))
        .collect::<Result<_, _>>()
        .ok()?;
    Some(format!(
        "on-disk modes do not follow the umask (SHA256SUMS {:04o} vs {:04o}); modes inside the archives are fixed too",
        modes[0], modes[1]
    ))
}

#[cfg(not(unix))]
fn mode_note(_dists: &[PathBuf]) -> Option<String> {
    None
}

/// Replaces `out` with `from` (a rename; a copy when they are on different file systems).
fn replace_with(from: &Path, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("cannot remove the old {}", out.display()))?;
    }
    if std::fs::rename(from, out).is_err() {
        std::fs::create_dir_all(out)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            std::fs::copy(entry.path(), out.join(entry.file_name())).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    entry.path().display(),
                    out.display()
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_inputs_need_a_pinned_opencode() {
        for v in [None, Some(""), Some("latest"), Some("LATEST")] {
            let err = pinned_opencode(v).unwrap_err().to_string();
            assert!(
                err.contains("OPENCODE_VERSION") && err.contains("hint:"),
                "{err}"
            );
        }
        assert!(pinned_opencode(Some("1.x")).is_err());
        assert_eq!(pinned_opencode(Some("v1.2.3")).unwrap(), "1.2.3");
        assert_eq!(pinned_opencode(Some("1.2.3")).unwrap(), "1.2.3");
    }
}
