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
        let root = self.data().join("sidecars");
        let mut stack = vec![root];
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
    // An endless manifest is cut off too.
    let o = m.run(&["sidecars", "list"]);
    fails(
        &o,
        4,
        &[
            "could not fetch the sidecar manifest",
            "more than the 8388608 bytes",
        ],
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
    m.assert_cache_clean();
}
