//! Shared by the integration tests: a loopback mirror of a host-target dist
//! and assertions on the real `openwrk` binary's output.
#![allow(dead_code)]

#[cfg(unix)]
pub mod standins;

use std::path::PathBuf;
use std::process::{Command, Output};

use openwrk_test_support::fixtures;
use openwrk_test_support::ReleaseHost;
use serde_json::Value;

/// A dist-like mirror directory for the host target, with its manifest.
pub struct Mirror {
    pub tmp: tempfile::TempDir,
    pub host: ReleaseHost,
}

pub fn target() -> &'static str {
    fixtures::host_target()
}

impl Mirror {
    pub fn new() -> Mirror {
        Self::with_pad(0)
    }

    pub fn with_pad(pad: u64) -> Mirror {
        Self::serving(pad, ReleaseHost::mirror)
    }

    /// The dist served by `serve` (HTTPS, behind the test proxy, …).
    pub fn serving(pad: u64, serve: impl FnOnce(&std::path::Path) -> ReleaseHost) -> Mirror {
        let tmp = tempfile::tempdir().unwrap();
        fixtures::host_dist(&tmp.path().join("dist"), "1.0.0", pad, 0).unwrap();
        let host = serve(&tmp.path().join("dist"));
        Mirror { tmp, host }
    }

    /// The CA of an HTTPS mirror, written to a file for `OPENWRK_CA_BUNDLE`.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.tmp.path().join("ca.pem");
        std::fs::write(&path, self.host.ca_pem().expect("an HTTPS mirror")).unwrap();
        path
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openwrk"));
        cmd.args(args)
            .env("OPENWRK_DATA_DIR", self.data())
            .env("OPENWRK_SIDECAR_BASE_URL", self.host.url())
            .env("OPENWRK_RETRY_BACKOFF_MS", "5")
            .env_remove("OPENWRK_SIDECAR_DIR")
            .env_remove("OPENWORK_SIDECAR_DIR")
            .env_remove("OPENWRK_SIDECAR_MANIFEST_URL")
            .env_remove("OPENWRK_SIDECAR_SOURCE")
            .env_remove("OPENWRK_OPENCODE_SOURCE")
            .env_remove("OPENWRK_ALLOW_EXTERNAL")
            .env_remove("OPENWRK_CA_BUNDLE")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn cache_dir(&self, name: &str) -> PathBuf {
        self.data()
            .join("sidecars")
            .join(name)
            .join("1.0.0")
            .join(target())
    }
}

pub fn ok(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "failed ({:?}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

pub fn fails(o: &Output, code: i32, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

pub fn rows(v: &Value) -> Vec<(String, String, String)> {
    v["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["source"].as_str().unwrap().into(),
                r["verified"].as_str().unwrap().into(),
            )
        })
        .collect()
}
