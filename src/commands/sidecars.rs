//! `openwrk sidecars list | fetch | verify | prune` (SPEC §3.5).

use serde::Serialize;

use super::Failure;
use crate::cli::{Global, SidecarsCommand};
use crate::supply::cache::Check;
use crate::supply::manifest::SIDECARS;
use crate::supply::platform::Target;
use crate::supply::resolve::{Resolver, SourceMode};

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    version: String,
    target: String,
    source: String,
    path: String,
    verified: String,
}

pub async fn run(global: &Global, command: SidecarsCommand) -> Result<i32, Failure> {
    if global.verbose {
        // `--verbose`: the library's diagnostics (retries, cache decisions) on stderr.
        super::logger(global, "");
    }
    let resolver = super::resolver(
        global,
        super::settings(global, [None, None, None])?,
        super::progress::Lines::Stderr {
            verbose: global.verbose,
        },
    )?;
    match command {
        SidecarsCommand::List => list(global, &resolver).await,
        SidecarsCommand::Fetch { targets } => fetch(global, &resolver, &targets).await,
        SidecarsCommand::Verify => verify(global, &resolver).await,
        SidecarsCommand::Prune { dry_run } => prune(global, &resolver, dry_run).await,
    }
}

fn print_rows(global: &Global, rows: &[Row], extra: serde_json::Value) {
    if global.json {
        let mut doc = serde_json::json!({ "sidecars": rows });
        if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
            doc.extend(extra.clone());
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
        return;
    }
    println!(
        "{:<16} {:<14} {:<13} {:<10} {:<8} path",
        "name", "version", "target", "source", "verified"
    );
    for r in rows {
        println!(
            "{:<16} {:<14} {:<13} {:<10} {:<8} {}",
            r.name, r.version, r.target, r.source, r.verified, r.path
        );
    }
}

/// Where each sidecar would come from now, without downloading anything.
async fn list(global: &Global, resolver: &Resolver) -> Result<i32, Failure> {
    let target = Target::host().map_err(crate::supply::resolve::ResolveError::from)?;
    let needs_manifest = SIDECARS.iter().any(|n| resolver.needs_manifest(n));
    let loaded = if needs_manifest {
        Some(resolver.load_manifest(false).await?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for name in SIDECARS {
        if !resolver.needs_manifest(name) {
            let r = resolver.resolve(name, None).await?;
            rows.push(row(
                &r.name,
                &r.version,
                target,
                "external",
                &r.path.display().to_string(),
                "external",
            ));
            continue;
        }
        let loaded = loaded.as_ref().expect("loaded above");
        let Some((entry, asset)) = loaded.manifest.target(name, target) else {
            if name == crate::supply::manifest::OPENCODE {
                // Not in the manifest: OpenCode comes from GitHub releases (SPEC §3.3).
                let (version, cached) = resolver.opencode_offline(target);
                let version = version.unwrap_or_else(|| "latest".into());
                match cached {
                    Some(path) => rows.push(row(
                        name,
                        &version,
                        target,
                        "cache",
                        &path.display().to_string(),
                        "yes",
                    )),
                    None => rows.push(row(name, &version, target, "github", "(not fetched)", "no")),
                }
            } else {
                rows.push(row(
                    name,
                    "-",
                    target,
                    "missing",
                    "(not in the manifest)",
                    "no",
                ));
            }
            continue;
        };
        let version = entry.version.as_str();
        let bundled = resolver
            .settings
            .exe_dir
            .as_ref()
            .map(|d| d.join("sidecars").join(target.exe_name(name)));
        let mode = if name == crate::supply::manifest::OPENCODE {
            resolver.settings.opencode_source
        } else {
            resolver.settings.sidecar_source
        };
        // `bundled` always shows the bundled copy (present or not); `auto` only when present.
        let shown = bundled
            .filter(|p| mode == SourceMode::Bundled || (mode == SourceMode::Auto && p.is_file()));
        if let Some(path) = shown {
            let ok = resolver.bundled_matches(&path, &asset.binary_digest())?;
            rows.push(row(
                name,
                version,
                target,
                "bundled",
                &path.display().to_string(),
                if ok { "yes" } else { "no" },
            ));
            if ok || mode == SourceMode::Bundled {
                continue;
            }
        }
        let e = resolver
            .cache
            .entry(name, version, target, &target.exe_name(name))
            .map_err(crate::supply::resolve::ResolveError::from)?;
        let (source, verified) = match e
            .check(&asset.binary_digest())
            .map_err(crate::supply::resolve::ResolveError::from)?
        {
            Check::Warm | Check::Rehashed => ("cache", "yes"),
            Check::Missing => ("download", "no"),
            Check::Corrupt { .. } => ("download", "no"),
        };
        rows.push(row(
            name,
            version,
            target,
            source,
            &e.binary.display().to_string(),
            verified,
        ));
    }
    print_rows(
        global,
        &rows,
        serde_json::json!({ "manifest": loaded.map(|l| l.origin) }),
    );
    Ok(0)
}

fn row(name: &str, version: &str, target: Target, source: &str, path: &str, verified: &str) -> Row {
    Row {
        name: name.into(),
        version: version.into(),
        target: target.id().into(),
        source: source.into(),
        path: path.into(),
        verified: verified.into(),
    }
}

/// Resolves and caches every sidecar of the manifest for each target.
async fn fetch(global: &Global, resolver: &Resolver, targets: &[String]) -> Result<i32, Failure> {
    let targets: Vec<Target> = if targets.is_empty() {
        vec![Target::host().map_err(crate::supply::resolve::ResolveError::from)?]
    } else {
        Target::parse_list(&targets.join(",")).map_err(|e| Failure {
            message: e.to_string(),
            code: 2,
        })?
    };
    let loaded = resolver.load_manifest(true).await?;
    let one = |name: &'static str, target: Target| {
        let loaded = &loaded;
        async move {
            let Some((entry, asset)) = loaded.manifest.target(name, target) else {
                if name == crate::supply::manifest::OPENCODE {
                    let host = Target::host().ok() == Some(target);
                    let r = resolver.opencode_from_github(target, host).await?;
                    if !global.json {
                        eprintln!("{} [from GitHub releases]", r.describe());
                    }
                    return Ok(Some(r));
                }
                if !global.json {
                    eprintln!("note: the manifest has no {name} for {target}; skipped");
                }
                return Ok(None);
            };
            let r = resolver
                .cached_or_download(name, entry.version.as_str(), target, asset, &loaded.base)
                .await?;
            if !global.json {
                eprintln!("{}", r.describe());
            }
            Ok::<_, Failure>(Some(r))
        }
    };
    let mut rows = Vec::new();
    for &target in &targets {
        // A target's sidecars download at once (each has its own cache lock);
        // every one runs to its end (nothing is cut off mid-download), and
        // the first failure in manifest order is the one reported.
        let resolved =
            futures_util::future::join_all(SIDECARS.iter().map(|&name| one(name, target))).await;
        for r in resolved
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
        {
            rows.push(row(
                &r.name,
                &r.version,
                target,
                r.origin.as_str(),
                &r.path.display().to_string(),
                r.verified,
            ));
        }
    }
    print_rows(
        global,
        &rows,
        serde_json::json!({ "manifest": loaded.origin }),
    );
    Ok(0)
}

/// Rehashes every cached binary against its `.verified` record and the manifest.
async fn verify(global: &Global, resolver: &Resolver) -> Result<i32, Failure> {
    let manifest = resolver.load_manifest(false).await.ok();
    let mut rows = Vec::new();
    let mut bad = 0;
    for (name, version, dir) in resolver.cache.list() {
        let Ok(target) = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .parse::<Target>()
        else {
            continue;
        };
        // Only what this openwrk could have written is looked at.
        let Ok(e) = resolver
            .cache
            .entry(&name, &version, target, &target.exe_name(&name))
        else {
            continue;
        };
        let actual = e
            .rehash()
            .map_err(crate::supply::resolve::ResolveError::from)?;
        let recorded = e.read_verified().map(|v| v.sha256);
        let expected = manifest
            .as_ref()
            .and_then(|m| m.manifest.target(&name, target))
            .filter(|(entry, _)| entry.version.as_str() == version)
            .map(|(_, a)| a.binary_digest().sha256.to_string());
        let verdict = match &actual {
            None => "missing",
            Some(d) if expected.as_ref().is_some_and(|x| *x != d.sha256) => "mismatch",
            Some(d) if recorded.as_ref().is_some_and(|x| *x != d.sha256) => "mismatch",
            Some(_) if expected.is_none() && recorded.is_none() => "unknown",
            Some(_) => "yes",
        };
        if verdict == "mismatch" {
            bad += 1;
            if !global.json {
                eprintln!(
                    "error: {} does not match {}\n  expected: {}\n  actual:   {}\nhint: run `openwrk sidecars fetch` to replace it",
                    e.binary.display(),
                    if expected.is_some() { "the manifest" } else { "its .verified record" },
                    expected.or(recorded).unwrap_or_default(),
                    actual.as_ref().map(|d| d.sha256.as_str()).unwrap_or_default()
                );
            }
        }
        rows.push(row(
            &name,
            &version,
            target,
            "cache",
            &e.binary.display().to_string(),
            verdict,
        ));
    }
    print_rows(global, &rows, serde_json::json!({ "mismatches": bad }));
    Ok(if bad > 0 { 5 } else { 0 })
}

/// Removes cached versions the manifest does not name.
async fn prune(global: &Global, resolver: &Resolver, dry_run: bool) -> Result<i32, Failure> {
    let loaded = resolver.load_manifest(false).await?;
    let mut removed = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, version, dir) in resolver.cache.list() {
        let keep = loaded
            .manifest
            .entries
            .get(&name)
            .is_some_and(|e| e.version.as_str() == version);
        let version_dir = dir.parent().expect("target dir has a parent").to_path_buf();
        if keep || !seen.insert(version_dir.clone()) {
            continue;
        }
        if !dry_run {
            std::fs::remove_dir_all(&version_dir).map_err(|e| Failure {
                message: format!("cannot remove {}: {e}", version_dir.display()),
                code: 1,
            })?;
        }
        removed.push(serde_json::json!({ "name": name, "version": version, "path": version_dir.display().to_string() }));
    }
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "removed": removed, "dryRun": dry_run })
        );
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for r in &removed {
            println!(
                "{verb} {} {} ({})",
                r["name"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            );
        }
        if removed.is_empty() {
            println!(
                "nothing to prune: every cached version is named by {}",
                loaded.origin
            );
        }
    }
    Ok(0)
}
