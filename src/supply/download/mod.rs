//! The one downloader for both halves (SPEC §2.5): streams to a temp file in
//! the destination directory while hashing, retries with backoff, resumes with
//! `Range`, refuses oversized bodies, verifies, then fsyncs and renames.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT_RANGES, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

mod config;
mod error;
mod part;
mod tee;

pub use config::{DownloadConfig, Expected};
pub use error::{DownloadError, ExpectedSize};
use part::PartFile;
pub use tee::{tee, Tee, TeeReader};

use crate::error_chain;
use crate::supply::digest::FileDigest;
use crate::supply::events::{Event, Notice, Reporter};
use crate::supply::github::ResetTime;
use crate::supply::ratelimit;

/// Below this many bytes per idle-timeout window a body counts as stalled
/// (a slow drip never trips a plain idle timeout).
const MIN_BYTES_PER_WINDOW: u64 = 1024;

/// One attempt's failure, and whether another attempt may help.
enum Attempt {
    Retry(DownloadError),
    /// Rate limited: retry once the server's short wait is over.
    RetryAfter(Duration, Box<DownloadError>),
    Fatal(DownloadError),
}

impl Attempt {
    fn into_inner(self) -> DownloadError {
        match self {
            Attempt::Retry(e) | Attempt::Fatal(e) => e,
            Attempt::RetryAfter(_, e) => *e,
        }
    }
}

pub struct Downloader {
    /// Built on first use: warm starts that download nothing skip loading TLS roots.
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    config: DownloadConfig,
    /// Where transfer progress goes.
    reporter: Reporter,
}

impl Downloader {
    pub fn new(config: DownloadConfig) -> Result<Downloader, DownloadError> {
        if let Some(path) = &config.ca_bundle {
            if !path.is_file() {
                return Err(DownloadError::Config(format!(
                    "OPENWRK_CA_BUNDLE {} is not a file",
                    path.display()
                )));
            }
        }
        Ok(Downloader {
            client: std::sync::OnceLock::new(),
            config,
            reporter: crate::supply::events::silent(),
        })
    }

    /// Reports transfers to `reporter`.
    pub fn with_reporter(mut self, reporter: Reporter) -> Downloader {
        self.reporter = reporter;
        self
    }

    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    fn build_client(config: &DownloadConfig) -> Result<reqwest::Client, String> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(crate::user_agent())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.idle_timeout);
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read OPENWRK_CA_BUNDLE {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "OPENWRK_CA_BUNDLE {} is not a PEM bundle: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "OPENWRK_CA_BUNDLE {} holds no PEM certificate",
                    path.display()
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        builder.build().map_err(|e| error_chain(&e))
    }

    pub fn from_env() -> Result<Downloader, DownloadError> {
        Downloader::new(DownloadConfig::from_env()?)
    }

    pub fn client(&self) -> Result<&reqwest::Client, DownloadError> {
        self.client
            .get_or_init(|| Self::build_client(&self.config))
            .as_ref()
            .map_err(|e| DownloadError::Config(e.clone()))
    }

    pub fn config(&self) -> &DownloadConfig {
        &self.config
    }

    /// Downloads `url` to `dest`. On success `dest` holds exactly the expected
    /// bytes; on failure neither `dest` nor a temp file is left behind.
    pub async fn download(
        &self,
        url: &str,
        dest: &Path,
        expected: &Expected,
    ) -> Result<FileDigest, DownloadError> {
        self.download_teed(url, dest, expected, None).await
    }

    /// [`Downloader::download`], also passing every byte to `tee` as it
    /// arrives (see [`tee`]), so an archive can be decompressed and hashed
    /// while it downloads. The tee's receiver going away does not stop the
    /// download. Dropping `tee` at the end (or on failure) ends its reader.
    pub async fn download_teed(
        &self,
        url: &str,
        dest: &Path,
        expected: &Expected,
        tee: Option<tokio::sync::mpsc::Sender<Tee>>,
    ) -> Result<FileDigest, DownloadError> {
        let mut part = PartFile::create(dest)?;
        let asset = asset_name(dest);
        let mut state = Progress {
            hasher: Sha256::new(),
            written: 0,
            accept_ranges: false,
            asset: &asset,
            reporter: &self.reporter,
            tee,
        };
        (self.reporter)(Event::TransferStarted {
            asset: &asset,
            size: expected.size,
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(url, &mut part, &mut state, expected).await {
                Ok(()) => break,
                Err(Attempt::Retry(e)) if attempt <= self.config.retries => {
                    let delay = backoff(self.config.backoff, attempt);
                    tracing::debug!(
                        "retrying {} in {} ms after attempt {attempt}: {}",
                        crate::sanitize::strip_userinfo(url),
                        delay.as_millis(),
                        crate::sanitize::strip_userinfo(
                            e.to_string().lines().next().unwrap_or_default()
                        )
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(Attempt::RetryAfter(wait, _)) if attempt <= self.config.retries => {
                    (self.reporter)(Event::Notice(Notice::RateLimitWait {
                        url: crate::sanitize::strip_userinfo(url),
                        secs: wait.as_secs(),
                    }));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let e = e.into_inner();
                    return Err(with_attempts(e, attempt, state.written));
                }
            }
        }
        let digest = FileDigest {
            sha256: hex::encode(state.hasher.finalize()),
            size: state.written,
        };
        verify(
            &crate::sanitize::strip_userinfo(url),
            dest,
            expected,
            &digest,
        )?;
        part.persist(dest)?;
        (self.reporter)(Event::TransferFinished { asset: &asset });
        Ok(digest)
    }

    /// Copies a file from a local mirror directory, with the same checks as a download.
    pub async fn copy_file(
        &self,
        src: &Path,
        dest: &Path,
        expected: &Expected,
    ) -> Result<FileDigest, DownloadError> {
        let (src, dest, expected) = (src.to_path_buf(), dest.to_path_buf(), expected.clone());
        let reporter = self.reporter.clone();
        tokio::task::spawn_blocking(move || {
            let name = src.display().to_string();
            let asset = asset_name(&dest);
            reporter(Event::TransferStarted {
                asset: &asset,
                size: expected.size,
            });
            let mut input = File::open(&src).map_err(|_| DownloadError::NotFound {
                url: name.clone(),
                status: 404,
            })?;
            let mut part = PartFile::create(&dest)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut input, &mut buf).map_err(|source| {
                    DownloadError::Io {
                        path: src.clone(),
                        source,
                    }
                })?;
                if n == 0 {
                    break;
                }
                if let Some(limit) = expected.cap().filter(|l| size + n as u64 > *l) {
                    return Err(DownloadError::TooLong { url: name, limit });
                }
                part.write(&buf[..n]).map_err(Attempt::into_inner)?;
                hasher.update(&buf[..n]);
                size += n as u64;
                reporter(Event::TransferProgress {
                    asset: &asset,
                    bytes: n as u64,
                });
            }
            let digest = FileDigest {
                sha256: hex::encode(hasher.finalize()),
                size,
            };
            verify(&name, &dest, &expected, &digest)?;
            part.persist(&dest)?;
            reporter(Event::TransferFinished { asset: &asset });
            Ok(digest)
        })
        .await
        .expect("copy task")
    }

    async fn attempt(
        &self,
        url: &str,
        part: &mut PartFile,
        state: &mut Progress<'_>,
        expected: &Expected,
    ) -> Result<(), Attempt> {
        let mut request = self.client().map_err(Attempt::Fatal)?.get(url);
        let resuming = state.written > 0 && state.accept_ranges;
        if resuming {
            tracing::debug!(
                "resuming {} at byte {}",
                crate::sanitize::strip_userinfo(url),
                state.written
            );
            request = request.header(RANGE, format!("bytes={}-", state.written));
        } else if state.written > 0 {
            state.restart(part).await?;
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(url, e, expected.size))?;
        let status = response.status();
        match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Err(Attempt::Fatal(DownloadError::NotFound {
                    url: url.into(),
                    status: status.as_u16(),
                }))
            }
            s if ratelimit::is_rate_limited(s, response.headers()) => {
                // A short wait the server asks for is waited out; a long one fails
                // at once naming the reset; a bare 429 is retried with backoff.
                let now = ratelimit::now();
                let reset = ratelimit::reset_at(response.headers(), now);
                let error = DownloadError::RateLimited {
                    url: url.into(),
                    status: s.as_u16(),
                    reset: ResetTime(reset),
                };
                return Err(match (reset, ratelimit::short_wait(reset, now)) {
                    (_, Some(wait)) => Attempt::RetryAfter(wait, Box::new(error)),
                    (None, None) if s == StatusCode::TOO_MANY_REQUESTS => Attempt::Retry(error),
                    _ => Attempt::Fatal(error),
                });
            }
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                return Err(Attempt::Retry(DownloadError::Status {
                    url: url.into(),
                    status: s.as_u16(),
                    attempts: 0,
                }))
            }
            s => {
                return Err(Attempt::Fatal(DownloadError::Status {
                    url: url.into(),
                    status: s.as_u16(),
                    attempts: 0,
                }))
            }
        }
        state.accept_ranges = response
            .headers()
            .get(ACCEPT_RANGES)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"))
            || status == StatusCode::PARTIAL_CONTENT;
        // A resumed request answered with anything but the range we asked for starts over.
        if state.written > 0
            && !(status == StatusCode::PARTIAL_CONTENT && range_starts_at(&response, state.written))
        {
            tracing::debug!(
                "{} did not resume (HTTP {}); starting over",
                crate::sanitize::strip_userinfo(url),
                status.as_u16()
            );
            state.restart(part).await?;
        }
        let body_len = response.content_length();
        let total = body_len.map(|n| n + state.written);
        if let (Some(limit), Some(total)) = (expected.cap(), total) {
            if total > limit {
                return Err(Attempt::Fatal(DownloadError::TooLong {
                    url: url.into(),
                    limit,
                }));
            }
        }
        // A body announced shorter than the manifest's size is the wrong file:
        // retrying cannot make it right (SPEC §2.5).
        if let (Some(size), Some(announced)) = (expected.size, total) {
            if announced != size {
                return Err(Attempt::Fatal(DownloadError::LengthMismatch {
                    url: url.into(),
                    expected: size,
                    announced,
                }));
            }
        }
        let mut stream = response.bytes_stream();
        let mut window = (std::time::Instant::now(), 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(url, e, expected.size.or(total)))?;
            window.1 += chunk.len() as u64;
            if window.0.elapsed() >= self.config.idle_timeout {
                if window.1 < MIN_BYTES_PER_WINDOW {
                    return Err(Attempt::Retry(DownloadError::Stalled {
                        url: url.into(),
                        secs: self.config.idle_timeout.as_secs_f64(),
                        attempts: 0,
                    }));
                }
                window = (std::time::Instant::now(), 0);
            }
            if let Some(limit) = expected.cap() {
                if state.written + chunk.len() as u64 > limit {
                    return Err(Attempt::Fatal(DownloadError::TooLong {
                        url: url.into(),
                        limit,
                    }));
                }
            }
            part.write(&chunk)?;
            state.hasher.update(&chunk);
            state.written += chunk.len() as u64;
            if let Some(tee) = &state.tee {
                if tee.send(Tee::Bytes(chunk.clone())).await.is_err() {
                    // The consumer is done (or gave up): the file is what counts.
                    state.tee = None;
                }
            }
            (state.reporter)(Event::TransferProgress {
                asset: state.asset,
                bytes: chunk.len() as u64,
            });
        }
        let want = expected.size.or(total);
        if let Some(want) = want {
            if state.written < want {
                return Err(Attempt::Retry(DownloadError::Truncated {
                    url: url.into(),
                    got: state.written,
                    expected: Some(want),
                    cause: "the body ended early".into(),
                    attempts: 0,
                }));
            }
        }
        Ok(())
    }

    fn transport_error(&self, url: &str, e: reqwest::Error, expected: Option<u64>) -> Attempt {
        if e.is_timeout() && !e.is_connect() {
            return Attempt::Retry(DownloadError::Idle {
                url: url.into(),
                secs: self.config.idle_timeout.as_secs(),
                attempts: 0,
            });
        }
        if e.is_body() || e.is_decode() {
            return Attempt::Retry(DownloadError::Truncated {
                url: url.into(),
                got: 0,
                expected,
                cause: error_chain(&e),
                attempts: 0,
            });
        }
        let cause = error_chain(&e);
        if is_certificate_problem(&cause) {
            return Attempt::Fatal(DownloadError::Certificate {
                url: url.into(),
                cause,
            });
        }
        if e.is_builder() {
            return Attempt::Fatal(DownloadError::Connect {
                url: url.into(),
                cause: error_chain(&e),
                attempts: 0,
            });
        }
        Attempt::Retry(DownloadError::Connect {
            url: url.into(),
            cause: error_chain(&e),
            attempts: 0,
        })
    }
}

/// Whether a transport error is TLS refusing the server's certificate (an
/// unknown issuer, a wrong name, an expired one) rather than the network.
pub fn is_certificate_problem(cause: &str) -> bool {
    let c = cause.to_ascii_lowercase();
    c.contains("certificate") || c.contains("unknownissuer") || c.contains("notvalidforname")
}

/// What one download has received so far, across its attempts.
struct Progress<'a> {
    hasher: Sha256,
    written: u64,
    accept_ranges: bool,
    asset: &'a str,
    reporter: &'a Reporter,
    tee: Option<tokio::sync::mpsc::Sender<Tee>>,
}

impl Progress<'_> {
    /// Drops what arrived: the next bytes start the file over.
    async fn restart(&mut self, part: &mut PartFile) -> Result<(), Attempt> {
        part.truncate().map_err(Attempt::Fatal)?;
        self.hasher = Sha256::new();
        self.written = 0;
        if let Some(tee) = self.tee.take() {
            let _ = tee.send(Tee::Restart).await;
        }
        (self.reporter)(Event::TransferRestarted { asset: self.asset });
        Ok(())
    }
}

/// The asset a destination holds: its file name without a leading dot.
fn asset_name(dest: &Path) -> String {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    name.trim_start_matches('.').to_string()
}

/// Size first, then SHA-256, against what the bytes must be.
fn verify(
    url: &str,
    dest: &Path,
    expected: &Expected,
    digest: &FileDigest,
) -> Result<(), DownloadError> {
    let asset = asset_name(dest);
    if let Some(size) = expected.size {
        if size != digest.size {
            return Err(DownloadError::SizeMismatch {
                asset,
                url: url.into(),
                expected: size,
                actual: digest.size,
            });
        }
    }
    if let Some(sha) = &expected.sha256 {
        if !sha.eq_ignore_ascii_case(&digest.sha256) {
            return Err(DownloadError::DigestMismatch {
                asset,
                url: url.into(),
                expected: sha.clone(),
                expected_size: ExpectedSize(expected.size),
                actual: digest.sha256.clone(),
                actual_size: digest.size,
            });
        }
    }
    Ok(())
}

fn range_starts_at(response: &reqwest::Response, offset: u64) -> bool {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bytes ")?
                .split('-')
                .next()?
                .parse::<u64>()
                .ok()
        })
        == Some(offset)
}

/// Fills in how many attempts were made and how many bytes arrived in the end,
/// and hides URL credentials (a mirror URL may carry `user:password@`).
fn with_attempts(mut e: DownloadError, n: u32, written: u64) -> DownloadError {
    e.hide_credentials();
    match &mut e {
        DownloadError::Connect { attempts, .. }
        | DownloadError::Idle { attempts, .. }
        | DownloadError::Stalled { attempts, .. }
        | DownloadError::Status { attempts, .. } => *attempts = n,
        DownloadError::Truncated { attempts, got, .. } => {
            *attempts = n;
            *got = written;
        }
        _ => {}
    }
    e
}

/// Exponential backoff with jitter: base·2^(n-1) plus up to half of that.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << (attempt - 1).min(10));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let jitter = exp.as_nanos() as u64 / 2;
    exp + Duration::from_nanos(if jitter == 0 { 0 } else { nanos % jitter })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_millis(100);
        for n in 1..=4 {
            let b = backoff(base, n);
            let exp = base * (1 << (n - 1));
            assert!(b >= exp && b <= exp + exp / 2, "{n}: {b:?}");
        }
    }
}
