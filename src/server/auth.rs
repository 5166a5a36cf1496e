//! API keys, checked as moshi-server checks them: the `kyutai-api-key` header, else
//! `Authorization: Bearer KEY` (what OpenAI's SDKs send), else the `auth_id` query parameter
//! (browsers cannot set websocket headers), against the configured keys. With no keys
//! configured, every client is accepted.

use axum::http::{HeaderMap, header};

/// The header moshi-server and its clients use.
pub(crate) const KEY_HEADER: &str = "kyutai-api-key";

/// The configured keys.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    keys: Vec<String>,
}

/// Who a client is, for the logs: which key it used (by its place in the list, never the key
/// itself), or an open server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identity {
    /// No keys are configured.
    Open,
    /// The key at this index (from 1).
    Key(usize),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Open => f.write_str("no key"),
            Identity::Key(n) => write!(f, "key #{n}"),
        }
    }
}

impl Auth {
    pub(crate) fn new(keys: &[String]) -> Auth {
        Auth {
            keys: keys.to_vec(),
        }
    }

    /// True when no key is required.
    pub(crate) fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The client's identity, or `None` when it must be refused. As in moshi-server, a header
    /// present decides alone (a wrong header is not rescued by the query).
    pub(crate) fn check(&self, headers: &HeaderMap, auth_id: Option<&str>) -> Option<Identity> {
        if self.is_open() {
            return Some(Identity::Open);
        }
        let given = match (headers.get(KEY_HEADER), headers.get(header::AUTHORIZATION)) {
            (Some(value), _) => value.to_str().ok(),
            (None, Some(value)) => value.to_str().ok().and_then(bearer),
            (None, None) => auth_id,
        }?;
        self.keys
            .iter()
            .position(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
            .map(|i| Identity::Key(i + 1))
    }
}

/// The key of an `Authorization: Bearer KEY` header (OpenAI's SDKs send it so).
fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without stopping at the first difference, so that timing does not reveal how much
/// of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_decides_then_the_query() {
        let auth = Auth::new(&["k1".into(), "k2".into()]);
        let mut headers = HeaderMap::new();
        assert_eq!(auth.check(&headers, None), None);
        assert_eq!(auth.check(&headers, Some("k2")), Some(Identity::Key(2)));
        assert_eq!(auth.check(&headers, Some("k3")), None);
        headers.insert(KEY_HEADER, "k1".parse().unwrap());
        assert_eq!(auth.check(&headers, Some("nope")), Some(Identity::Key(1)));
        headers.insert(KEY_HEADER, "bad".parse().unwrap());
        assert_eq!(auth.check(&headers, Some("k1")), None);
        assert_eq!(Auth::new(&[]).check(&headers, None), Some(Identity::Open));
        // OpenAI's SDKs: `Authorization: Bearer KEY`.
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer k2".parse().unwrap());
        assert_eq!(auth.check(&headers, None), Some(Identity::Key(2)));
        headers.insert(header::AUTHORIZATION, "Bearer k3".parse().unwrap());
        assert_eq!(auth.check(&headers, Some("k1")), None);
        headers.insert(header::AUTHORIZATION, "Basic k1".parse().unwrap());
        assert_eq!(auth.check(&headers, None), None);
    }
}
