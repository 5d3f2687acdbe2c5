//! Session tokens and the cookie that carries them.
//!
//! The browser holds a random 256-bit token; the database holds only its
//! SHA-256, so a copy of the database does not hand out live sessions.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::HeaderMap;
use hyper::header::COOKIE;
use sha2::{Digest, Sha256};

/// Cookie name. The `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so no other host can set or shadow it.
pub const COOKIE_NAME: &str = "__Host-befund-session";

/// Length of a session token in bytes (256 bits).
const TOKEN_LEN: usize = 32;

/// A session token as the client holds it.
pub struct SessionToken([u8; TOKEN_LEN]);

impl SessionToken {
    /// A fresh token from the operating system's random source.
    ///
    /// # Errors
    ///
    /// Returns the random source's error when it cannot supply bytes.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The token from the request's session cookie; `None` when there is no
    /// such cookie, when it is given more than once, or when its value is not
    /// a token this server could have issued.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE_NAME)
            .map(|(_, value)| value);
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The server-side key of this token.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.0).into())
    }

    /// `Set-Cookie` value that hands this token to the client for `ttl`.
    pub fn set_cookie(&self, ttl: Duration) -> String {
        format!(
            "{COOKIE_NAME}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            URL_SAFE_NO_PAD.encode(self.0),
            ttl.as_secs()
        )
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// SHA-256 of a session token: the key under which the session is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest bytes, as stored in the database.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn cookie_headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    /// The `name=value` part of a `Set-Cookie` value.
    fn pair(set_cookie: &str) -> &str {
        set_cookie.split(';').next().unwrap()
    }

    #[test]
    fn token_round_trips_through_its_cookie() {
        let token = SessionToken::generate().unwrap();
        let set_cookie = token.set_cookie(Duration::from_secs(60));
        let headers = cookie_headers(&format!("theme=dark; {}", pair(&set_cookie)));

        let back = SessionToken::from_headers(&headers).unwrap();

        assert!(back.digest() == token.digest());
    }

    #[test]
    fn cookie_carries_the_hardening_attributes() {
        let set_cookie = SessionToken::generate()
            .unwrap()
            .set_cookie(Duration::from_secs(3600));

        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(
                set_cookie.contains(attribute),
                "{set_cookie} lacks {attribute}"
            );
        }
    }

    #[test]
    fn two_tokens_differ() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();

        assert!(a.digest() != b.digest());
    }

    #[test]
    fn duplicate_or_short_session_cookie_is_ignored() {
        let token = SessionToken::generate().unwrap();
        let cookie = pair(&token.set_cookie(Duration::from_secs(1))).to_owned();

        assert!(
            SessionToken::from_headers(&cookie_headers(&format!("{cookie}; {cookie}"))).is_none()
        );
        assert!(
            SessionToken::from_headers(&cookie_headers(&format!("{COOKIE_NAME}=abcd"))).is_none()
        );
        assert!(SessionToken::from_headers(&HeaderMap::new()).is_none());
    }
}
