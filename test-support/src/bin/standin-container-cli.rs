//! A recording stand-in for the `docker` / `podman` / `container` CLIs
//! (tests of openwrk's container sandboxes, SPEC §5.9). Every call appends
//! one JSON line `{"argv":[…],"envNames":[…]}` to `$STANDIN_CONTAINER_RECORD`
//! (`envNames`: the variables the container would get), then:
//! - `version …`, `system status`: answers, or fails like a stopped engine
//!   with `STANDIN_CONTAINER_ENGINE=down`;
//! - `rm -f NAME`, `delete --force NAME`: succeeds;
//! - `run [options] IMAGE ARGS…`: builds the container's environment from
//!   the `-e` options (`NAME=value`, or `NAME` taken from its own
//!   environment, as docker does), maps `--entrypoint` through the bind
//!   mounts to the host file, rewrites `--hostname 0.0.0.0` to the host
//!   address of `-p` (tests listen on loopback only), changes to `-w` and
//!   execs the entrypoint: a stand-in OpenCode behind it becomes healthy.
//!   With `STANDIN_CONTAINER_BAD_IMAGE=<image>`, running that image fails
//!   like an image without glibc.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn record(argv: &[String], env_names: &[String]) {
    let Some(path) = std::env::var_os("STANDIN_CONTAINER_RECORD") else {
        return;
    };
    let line = serde_json::json!({ "argv": argv, "envNames": env_names }).to_string();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// `type=bind,source=S,target=T[,readonly]` → (S, T).
fn parse_mount(spec: &str) -> Option<(PathBuf, PathBuf)> {
    let mut src = None;
    let mut dst = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("source" | "src", v)) => src = Some(PathBuf::from(v)),
            Some(("target" | "dst" | "destination", v)) => dst = Some(PathBuf::from(v)),
            _ => {}
        }
    }
    Some((src?, dst?))
}

/// Options of `run` that take a value.
const WITH_VALUE: &[&str] = &[
    "--name",
    "--tmpfs",
    "--cap-drop",
    "--security-opt",
    "--user",
    "-u",
    "--userns",
    "--mount",
    "-v",
    "-p",
    "--publish",
    "-w",
    "--workdir",
    "-e",
    "--env",
    "--entrypoint",
];

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version", ..] | ["system", "status", ..] => {
            record(&argv, &[]);
            if std::env::var("STANDIN_CONTAINER_ENGINE").as_deref() == Ok("down") {
                eprintln!("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?");
                std::process::exit(1);
            }
            println!("0.0.0-standin");
        }
        ["rm", ..] | ["delete", ..] => record(&argv, &[]),
        ["run", rest @ ..] => run(&argv, rest),
        _ => {
            record(&argv, &[]);
            eprintln!("standin-container-cli: unsupported command {argv:?}");
            std::process::exit(2);
        }
    }
}

fn run(argv: &[String], rest: &[&str]) {
    let mut env: BTreeMap<String, OsString> = BTreeMap::new();
    let mut mounts = Vec::new();
    let mut entrypoint = None;
    let mut workdir = None;
    let mut publish_host = None;
    let mut i = 0;
    while i < rest.len() && rest[i].starts_with('-') {
        let opt = rest[i];
        if !WITH_VALUE.contains(&opt) {
            i += 1;
            continue;
        }
        let value = rest.get(i + 1).copied().unwrap_or_default();
        match opt {
            "-e" | "--env" => match value.split_once('=') {
                Some((k, v)) => {
                    env.insert(k.to_string(), v.into());
                }
                None => {
                    if let Some(v) = std::env::var_os(value) {
                        env.insert(value.to_string(), v);
                    }
                }
            },
            "--mount" => mounts.extend(parse_mount(value)),
            "--entrypoint" => entrypoint = Some(PathBuf::from(value)),
            "-w" | "--workdir" => workdir = Some(PathBuf::from(value)),
            "-p" | "--publish" => {
                // host:port:port, host possibly bracketed.
                let host = value.rsplitn(3, ':').nth(2).unwrap_or("127.0.0.1");
                publish_host = Some(host.trim_matches(['[', ']']).to_string());
            }
            _ => {}
        }
        i += 2;
    }
    let names: Vec<String> = env.keys().cloned().collect();
    record(argv, &names);
    let Some(image) = rest.get(i) else {
        eprintln!("standin-container-cli: no image");
        std::process::exit(125);
    };
    if std::env::var("STANDIN_CONTAINER_BAD_IMAGE").ok().as_deref() == Some(*image) {
        eprintln!("exec /openwrk/bin/opencode: no such file or directory");
        std::process::exit(127);
    }
    let Some(entrypoint) = entrypoint else {
        eprintln!("standin-container-cli: the stand-in needs --entrypoint");
        std::process::exit(125);
    };
    // The host file behind the entrypoint: a file mount, or one in a mounted directory.
    let host = mounts.iter().find_map(|(src, dst): &(PathBuf, PathBuf)| {
        if &entrypoint == dst {
            Some(src.clone())
        } else {
            entrypoint.strip_prefix(dst).ok().map(|rel| src.join(rel))
        }
    });
    let Some(host) = host else {
        eprintln!(
            "exec {}: no such file or directory (not mounted)",
            entrypoint.display()
        );
        std::process::exit(127);
    };
    let mut args: Vec<String> = rest[i + 1..].iter().map(|s| s.to_string()).collect();
    for j in 0..args.len() {
        if args[j] == "--hostname" && j + 1 < args.len() && args[j + 1] == "0.0.0.0" {
            args[j + 1] = publish_host.clone().unwrap_or_else(|| "127.0.0.1".into());
        }
    }
    exec(&host, &args, env, workdir.as_deref());
}

#[cfg(unix)]
fn exec(program: &Path, args: &[String], env: BTreeMap<String, OsString>, dir: Option<&Path>) {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env_clear().envs(env);
    if let Some(d) = dir.filter(|d| d.is_dir()) {
        cmd.current_dir(d);
    }
    let e = cmd.exec();
    eprintln!("exec {}: {e}", program.display());
    std::process::exit(127);
}

#[cfg(not(unix))]
fn exec(program: &Path, args: &[String], env: BTreeMap<String, OsString>, dir: Option<&Path>) {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env_clear().envs(env);
    if let Some(d) = dir.filter(|d| d.is_dir()) {
        cmd.current_dir(d);
    }
    let status = cmd.status().map(|s| s.code().unwrap_or(1)).unwrap_or(127);
    std::process::exit(status);
}
