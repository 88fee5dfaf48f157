//! Generated secrets and ids (SPEC §5.2, §8): OpenCode passwords, OpenWork
//! tokens and UUIDv7 run ids, all from the OS CSPRNG.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}\nhint: pass the credentials explicitly (OPENWRK_OPENCODE_PASSWORD, OPENWRK_OPENWORK_TOKEN, OPENWRK_HOST_TOKEN)")]
pub struct RandomError(String);

fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| RandomError(e.to_string()))?;
    Ok(buf)
}

/// 192 random bits as URL-safe base64 (32 characters, no padding): safe in
/// URLs, headers and env vars without quoting.
pub fn token() -> Result<String, RandomError> {
    let bytes = random_bytes::<24>()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A UUIDv7 (RFC 9562): 48-bit Unix milliseconds then random bits, so run
/// ids sort by start time.
pub fn uuid_v7() -> Result<String, RandomError> {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut b = random_bytes::<16>()?;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The `Authorization` header value for HTTP basic auth.
pub fn basic_auth(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Every credential a run uses, whether given or generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub opencode_username: String,
    pub opencode_password: String,
    pub openwork_token: String,
    pub host_token: String,
}

impl Credentials {
    /// Keeps the given values (empty counts as not given) and generates the rest.
    pub fn fill(
        opencode_username: &str,
        opencode_password: Option<&str>,
        openwork_token: Option<&str>,
        host_token: Option<&str>,
    ) -> Result<Credentials, RandomError> {
        let given = |v: Option<&str>| -> Result<String, RandomError> {
            match v.filter(|s| !s.is_empty()) {
                Some(s) => Ok(s.to_string()),
                None => token(),
            }
        };
        Ok(Credentials {
            opencode_username: opencode_username.to_string(),
            opencode_password: given(opencode_password)?,
            openwork_token: given(openwork_token)?,
            host_token: given(host_token)?,
        })
    }

    /// Values that must never reach a log line, including derived forms
    /// (the basic-auth header) that a child might echo.
    pub fn secrets(&self) -> Vec<String> {
        let auth = basic_auth(&self.opencode_username, &self.opencode_password);
        let encoded = auth.trim_start_matches("Basic ").to_string();
        vec![
            self.opencode_password.clone(),
            self.openwork_token.clone(),
            self.host_token.clone(),
            encoded,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let a = token().unwrap();
        let b = token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn uuid_v7_has_version_variant_and_time_order() {
        let a = uuid_v7().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = uuid_v7().unwrap();
        assert!(a[..13] < b[..13]);
    }

    #[test]
    fn given_credentials_are_kept_and_missing_ones_generated() {
        let c = Credentials::fill("me", Some("pw"), None, Some("")).unwrap();
        assert_eq!(c.opencode_password, "pw");
        assert_eq!(c.openwork_token.len(), 32);
        assert_eq!(c.host_token.len(), 32);
        assert_eq!(basic_auth("opencode", "x"), "Basic b3BlbmNvZGU6eA==");
        assert!(c.secrets().contains(&"bWU6cHc=".to_string()));
    }
}
