//! A hostile mirror: wrong lengths, endless bodies, slow drips, redirects and
//! decompression bombs each end in a clear error within bounded time, and the
//! cache is left as it was.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{fails, ok, target, Mirror};
use openwrk_test_support::fixtures::{self, Entry};
use openwrk_test_support::ReleaseHost;

impl Mirror {
    /// `sidecars fetch` with the manifest read locally, so only assets cross the hostile host.
    fn fetch_assets(&self, env: &[(&str, &str)]) -> (std::process::Output, Duration) {
        let manifest = self.tmp.path().join("dist/openwrk-sidecars.json");
        let mut cmd = self.cmd(&[
            "sidecars",
            "fetch",
            "--sidecar-manifest",
            manifest.to_str().unwrap(),
        ]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        (out, started.elapsed())
    }

    /// Nothing but lock files in the cache.
    fn assert_cache_clean(&self) {
        self.assert_clean(&self.data().join("sidecars"));
    }

    /// Nothing but lock files under `root`.
    fn assert_clean(&self, root: &std::path::Path) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    assert_eq!(
                        e.file_name(),
                        ".lock",
                        "left in the cache: {}",
                        e.path().display()
                    );
                }
            }
        }
    }
}

#[test]
fn wrong_content_length_is_refused() {
    // Announcing more than the manifest's size is refused before the body is read.
    let m = Mirror::new();
    m.host.faults().wrong_length.store(true, Ordering::SeqCst);
    let (o, _) = m.fetch_assets(&[]);
    fails(
        &o,
        5,
        &["announces or sends more than the", "nothing was kept"],
    );
    m.assert_cache_clean();
}

#[test]
fn endless_bodies_stop_at_the_manifest_size() {
    let m = Mirror::new();
    m.host.faults().endless.store(true, Ordering::SeqCst);
    let (o, took) = m.fetch_assets(&[]);
    fails(
        &o,
        5,
        &["announces or sends more than the", "bytes expected"],
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    m.assert_cache_clean();
    // An endless manifest is cut off too: a manifest error (3), not a network one.
    let o = m.run(&["sidecars", "list"]);
    fails(
        &o,
        3,
        &["the sidecar manifest", "is larger than 8388608 bytes"],
    );
}

#[test]
fn slow_drip_is_a_stall_within_bounded_time() {
    let m = Mirror::new();
    m.host.faults().drip_ms.store(100, Ordering::SeqCst);
    let (o, took) = m.fetch_assets(&[("OPENWRK_IDLE_TIMEOUT", "1")]);
    fails(&o, 4, &["less than 1 KiB per 1 s", "OPENWRK_IDLE_TIMEOUT"]);
    assert!(took < Duration::from_secs(30), "{took:?}");
    m.assert_cache_clean();
}

#[test]
fn redirects_loops_and_other_hosts() {
    // A loop ends in a clear error.
    let m = Mirror::new();
    *m.host.faults().redirect_to.lock().unwrap() = Some(m.host.url());
    let (o, took) = m.fetch_assets(&[]);
    fails(&o, 4, &["redirect"]);
    assert!(took < Duration::from_secs(30), "{took:?}");
    m.assert_cache_clean();

    // Another host serving other bytes: the digest catches it.
    let other_dir = m.tmp.path().join("other");
    fixtures::host_dist(&other_dir, "1.0.1", 0, 0).unwrap();
    let other = ReleaseHost::mirror(&other_dir);
    *m.host.faults().redirect_to.lock().unwrap() = Some(other.url());
    let (o, _) = m.fetch_assets(&[]);
    fails(&o, 5, &["mismatch"]);
    m.assert_cache_clean();

    // Another host serving the same bytes (as GitHub's CDN does): verified and accepted.
    let same = ReleaseHost::mirror(&m.tmp.path().join("dist"));
    *m.host.faults().redirect_to.lock().unwrap() = Some(same.url());
    let (o, _) = m.fetch_assets(&[]);
    ok(&o);
    assert!(same.requests() >= 3);
}

#[test]
fn decompression_bomb_is_refused() {
    let m = Mirror::new();
    let dist = m.tmp.path().join("dist");
    // Replace opencode's archive by 64 MiB of zeros under the binary's name; the
    // manifest still says the binary is small.
    let asset = format!("opencode-{}.tar.gz", target());
    let zeros = vec![0u8; 64 << 20];
    fixtures::tar_gz(&dist.join(&asset), &[("opencode", Entry::Bytes(&zeros))]).unwrap();
    let (sha, size) = openwrk_test_support::host::sha256_file(&dist.join(&asset));
    let path = dist.join("openwrk-sidecars.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let t = &mut manifest["entries"]["opencode"]["targets"][target()];
    t["sha256"] = sha.into();
    t["size"] = size.into();
    let limit = t["binarySize"].as_u64().unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let (o, _) = m.fetch_assets(&[]);
    fails(
        &o,
        5,
        &["larger than", &limit.to_string(), "decompression bomb"],
    );
    // Nothing of the bomb is kept; the two genuine sidecars, which download
    // alongside it, may be cached (verified).
    m.assert_clean(&m.data().join("sidecars/opencode"));
    for name in ["openwork-server", "owpenbot"] {
        let dir = m.cache_dir(name);
        if dir.join(name).exists() {
            assert!(dir.join(".verified").is_file(), "{}", dir.display());
        }
    }
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_leaves_no_partial_file_and_the_rest_of_the_cache_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    // openwork-server is 2 MiB; the cache has room for 512 KiB.
    fixtures::host_dist(&dist, "1.0.0", 0, 2 << 20).unwrap();
    let mirror = ReleaseHost::mirror(&dist);
    let cache = tmp.path().join("small-disk");
    let mount = Tmpfs::mount(&cache, "512k");
    if !openwrk_test_support::prerequisite(
        "root",
        "a tmpfs mount (root) for the disk-full case",
        mount.is_some(),
    ) {
        return;
    }
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_openwrk"))
            .args(args)
            .env("OPENWRK_DATA_DIR", tmp.path().join("data"))
            .env("OPENWRK_SIDECAR_DIR", &cache)
            .env("OPENWRK_SIDECAR_BASE_URL", mirror.url())
            .env("OPENWRK_RETRY_BACKOFF_MS", "5")
            .output()
            .unwrap()
    };
    let o = run(&["sidecars", "fetch"]);
    // A local disk full is a runtime failure naming the path (SPEC §9), not a network error.
    let err = fails(&o, 1, &["cannot write", "openwork-server", "free space"]);
    assert!(
        err.contains("No space left") || err.contains("space"),
        "{err}"
    );
    // No partial file anywhere; opencode (fetched before) still verifies.
    let mut stack = vec![cache.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".part-") && !name.ends_with(".tar.gz"),
                "left behind: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(!cache
        .join("openwork-server/1.0.0")
        .join(target())
        .join("openwork-server")
        .exists());
    let o = run(&["sidecars", "verify", "--json"]);
    let v = ok(&o);
    let opencode = v["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opencode")
        .unwrap();
    assert_eq!(opencode["verified"], "yes");
}
