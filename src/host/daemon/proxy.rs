//! The router daemon's reverse proxy (SPEC §6): `ANY /w/{id}/{rest}` →
//! OpenCode `/{rest}?directory=<path>`, and any other path to the active
//! workspace, with OpenCode's basic auth filled in. Bodies stream both ways,
//! so OpenCode's event stream (SSE) passes through.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;

use super::api::{error, state_error, Shared};
use crate::host::workspaces::Workspace;

pub(super) fn unreachable_upstream(e: &reqwest::Error) -> Response {
    error(
        StatusCode::BAD_GATEWAY,
        "opencode_unreachable",
        &format!("OpenCode did not answer: {}", crate::error_chain(e)),
    )
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1);
/// never forwarded by a proxy.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// An upstream response as ours, its body streamed as it arrives.
pub(super) fn relay(upstream: reqwest::Response) -> Response {
    let mut response = Response::builder().status(upstream.status().as_u16());
    if let Some(headers) = response.headers_mut() {
        for (k, v) in upstream.headers() {
            if !hop_by_hop(k) {
                headers.append(k.clone(), v.clone());
            }
        }
    }
    let body = Body::from_stream(upstream.bytes_stream());
    response
        .body(body)
        .unwrap_or_else(|e| state_error(e.to_string()))
}

/// `ANY /w/{id}/{rest}` → OpenCode `/{rest}` with `directory=<path>`.
pub(super) async fn by_id(State(s): State<Arc<Shared>>, req: Request) -> Response {
    // The raw (still percent-encoded) path, so `rest` reaches OpenCode unchanged.
    let raw = req.uri().path().strip_prefix("/w/").unwrap_or_default();
    let (id, rest) = raw.split_once('/').unwrap_or((raw, ""));
    let (id, rest) = (id.to_string(), rest.to_string());
    match s.workspace(&id) {
        Ok(w) => forward(&s, &w, &rest, req).await,
        Err(e) => e.into_response(),
    }
}

/// Any other path (a request that names no workspace) → OpenCode with the
/// active workspace's directory (`openwrk workspace switch`).
pub(super) async fn active(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let rest = req.uri().path().trim_start_matches('/').to_string();
    match s.active_workspace() {
        Ok(w) => forward(&s, &w, &rest, req).await,
        Err(e) => e.into_response(),
    }
}

/// Sends `req` to OpenCode `/{rest}` in `workspace`, streaming both bodies.
async fn forward(s: &Shared, workspace: &Workspace, rest: &str, req: Request) -> Response {
    let started = Instant::now();
    let base = match s.upstream() {
        Ok(base) => base,
        Err(e) => return e.into_response(),
    };
    let id = &workspace.id;
    let url = format!(
        "{base}/{rest}?{}",
        with_directory(req.uri().query(), &workspace.path.to_string_lossy())
    );
    let method = req.method().clone();
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        // The daemon's bearer token stays here; OpenCode gets its basic auth.
        let ours = matches!(
            k.as_str(),
            "host" | "authorization" | "x-opencode-directory"
        );
        if !ours && !hop_by_hop(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&s.opencode_auth) {
        headers.insert(header::AUTHORIZATION, v);
    }
    let has_body = has_body(req.headers(), &method);
    let mut upstream = s.client.request(method.clone(), &url).headers(headers);
    if has_body {
        let stream = req
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        upstream = upstream.body(reqwest::Body::wrap_stream(stream));
    }
    let answer = upstream.send().await;
    let log_line = |status: String| {
        s.logger.debug(&format!(
            "{method} /w/{id}/{rest} -> {status} ({} ms)",
            started.elapsed().as_millis()
        ))
    };
    match answer {
        Ok(r) => {
            log_line(r.status().as_u16().to_string());
            relay(r)
        }
        Err(e) => {
            log_line(format!("error: {}", crate::error_chain(&e)));
            unreachable_upstream(&e)
        }
    }
}

/// Whether a request carries a body to forward: a length above zero or a
/// chunked transfer. A GET without one must not turn into a chunked request.
fn has_body(headers: &HeaderMap, method: &Method) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING) && method != Method::HEAD,
    }
}

/// The client's query without its own `directory`, plus the workspace's.
/// Keys are compared decoded (`dir%65ctory` is `directory` to OpenCode), so a
/// client cannot smuggle in another workspace.
fn with_directory(query: Option<&str>, directory: &str) -> String {
    let mut parts: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !names_directory(p.split('=').next().unwrap_or_default()))
        .collect();
    let ours = format!("directory={}", encode_query_value(directory));
    parts.push(&ours);
    parts.join("&")
}

/// Whether a raw query key decodes to `directory` (any case, `+` as space,
/// surrounding spaces ignored): erring towards stripping is safe.
fn names_directory(raw_key: &str) -> bool {
    let plus_as_space = raw_key.replace('+', " ");
    let bytes = plus_as_space.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded)
        .trim()
        .eq_ignore_ascii_case("directory")
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`, so
/// any decoder (with or without `+` as space) reads the path back exactly.
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_directory_replaces_the_clients() {
        assert_eq!(
            with_directory(Some("a=1&directory=/etc&b=x%20y"), "/home/me/my proj+1"),
            "a=1&b=x%20y&directory=/home/me/my%20proj%2B1"
        );
        assert_eq!(with_directory(None, "/w"), "directory=/w");
        // Encoded spellings of the key are the same key to OpenCode.
        assert_eq!(
            with_directory(
                Some("dir%65ctory=/etc&%64irectory=/x&Directory=/y&directory+=/z&directory"),
                "/w"
            ),
            "directory=/w"
        );
        assert_eq!(
            with_directory(Some("directoryx=1&dir=2"), "/w"),
            "directoryx=1&dir=2&directory=/w"
        );
        assert_eq!(encode_query_value("/a/ä&b"), "/a/%C3%A4%26b");
    }

    #[test]
    fn bodies_are_forwarded_only_when_present() {
        let mut h = HeaderMap::new();
        assert!(!has_body(&h, &Method::GET));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!has_body(&h, &Method::POST));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(has_body(&h, &Method::POST));
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(has_body(&chunked, &Method::POST));
    }
}
