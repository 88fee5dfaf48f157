//! The GitHub releases API part of the loopback host: list, latest, by tag,
//! with the rate-limit and digest faults.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::host::{Shared, Stored};

pub(crate) fn release_json(shared: &Shared, repo: &str, stored: &Stored) -> Value {
    let faults = &shared.faults;
    let assets: Vec<Value> = stored
        .release
        .assets
        .iter()
        .map(|a| {
            let (sha, size) = &stored.digests[&a.name];
            let mut asset = json!({
                "name": a.name,
                "size": size,
                "browser_download_url": format!("{}/{repo}/releases/download/{}/{}", shared.base, stored.release.tag, a.name),
            });
            if faults.wrong_digest.load(Ordering::SeqCst) {
                asset["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
            } else if !faults.no_digest.load(Ordering::SeqCst) {
                asset["digest"] = json!(format!("sha256:{sha}"));
            }
            asset
        })
        .collect();
    json!({
        "tag_name": stored.release.tag,
        "name": stored.release.tag,
        "draft": stored.release.draft,
        "prerelease": stored.release.prerelease,
        "assets": assets,
    })
}

pub(crate) fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": "https://docs.github.com/rest" })),
    )
        .into_response()
}

fn rate_limited(shared: &Shared) -> Option<Response> {
    if !shared.faults.rate_limited.load(Ordering::SeqCst) {
        return None;
    }
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 17 * 60;
    let mut r = api_error(
        StatusCode::FORBIDDEN,
        "API rate limit exceeded for 127.0.0.1.",
    );
    let h = r.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from_static("60"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from_str(&reset.to_string()).unwrap(),
    );
    Some(r)
}

pub(crate) async fn list_releases(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = rate_limited(&shared) {
        return r;
    }
    let key = format!("{owner}/{repo}");
    let repos = shared.repos.lock().unwrap();
    let Some(releases) = repos.get(&key) else {
        return api_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // GitHub lists newest first; ours are in publication order.
    let all: Vec<Value> = releases
        .iter()
        .rev()
        .map(|s| release_json(&shared, &key, s))
        .collect();
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Json(Value::Array(items)).into_response()
}

pub(crate) async fn latest_release(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
) -> Response {
    if let Some(r) = rate_limited(&shared) {
        return r;
    }
    if shared.faults.no_latest_endpoint.load(Ordering::SeqCst) {
        return api_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let key = format!("{owner}/{repo}");
    let repos = shared.repos.lock().unwrap();
    // Like GitHub: the most recently published non-draft, non-prerelease release.
    let latest = repos.get(&key).and_then(|rs| {
        rs.iter()
            .rev()
            .find(|s| !s.release.draft && !s.release.prerelease)
    });
    match latest {
        Some(s) => Json(release_json(&shared, &key, s)).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

pub(crate) async fn release_by_tag(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, tag)): UrlPath<(String, String, String)>,
) -> Response {
    if let Some(r) = rate_limited(&shared) {
        return r;
    }
    let key = format!("{owner}/{repo}");
    let repos = shared.repos.lock().unwrap();
    match repos
        .get(&key)
        .and_then(|rs| rs.iter().find(|s| s.release.tag == tag))
    {
        Some(s) => Json(release_json(&shared, &key, s)).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}
