//! Who may do what: login with three factors, and the checks every later
//! request of a session must pass.

use std::fmt;
use std::time::SystemTime;

use hyper::HeaderMap;

use super::db::{Session, Store, StoreError, User};
use super::identity::{CertBinding, ForwardedIdentity, IdentityError};
use super::password::{PasswordError, Verifier};
use super::session::SessionToken;

/// Why a request was refused. The reason goes to the log; the client only
/// learns that it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No proxy secret header: the request did not come through the proxy.
    MissingProxySecret,
    /// A proxy secret header with the wrong value (or more than one).
    BadProxySecret,
    /// An identity header needed for the decision is absent.
    MissingIdentity,
    /// An identity header is repeated or cannot be decoded.
    MalformedIdentity,
    /// The identity headers disagree with the forwarded certificate.
    InconsistentIdentity,
    /// No account with this username.
    UnknownUser,
    /// The password does not match the account's.
    BadPassword,
    /// The certificate is not the one bound to the account (or, for a
    /// session, not the one it logged in with).
    IdentityMismatch,
    /// The request has no session cookie.
    MissingSession,
    /// The session cookie names no live session (unknown, ended or expired).
    UnknownSession,
}

impl Refusal {
    /// The value of the `reason` log field.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingProxySecret => "missing_proxy_secret",
            Self::BadProxySecret => "bad_proxy_secret",
            Self::MissingIdentity => "missing_identity",
            Self::MalformedIdentity => "malformed_identity",
            Self::InconsistentIdentity => "inconsistent_identity",
            Self::UnknownUser => "unknown_user",
            Self::BadPassword => "bad_password",
            Self::IdentityMismatch => "identity_mismatch",
            Self::MissingSession => "missing_session",
            Self::UnknownSession => "unknown_session",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl From<&IdentityError> for Refusal {
    fn from(e: &IdentityError) -> Self {
        match e {
            IdentityError::Missing(_) => Self::MissingIdentity,
            IdentityError::Malformed(_) => Self::MalformedIdentity,
            IdentityError::Inconsistent(_) => Self::InconsistentIdentity,
        }
    }
}

/// Outcome of an authentication step that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client was refused.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The server could not decide (database or stored hash broken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password verification could not run.
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl From<Refusal> for AuthError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

/// Username and password from the login form.
pub struct Credentials {
    /// Login name.
    pub username: String,
    /// Password, never logged.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The identity headers of a request, or the refusal they cause.
///
/// # Errors
///
/// [`Refusal::MissingIdentity`], [`Refusal::MalformedIdentity`] or
/// [`Refusal::InconsistentIdentity`].
pub fn forwarded_identity(headers: &HeaderMap) -> Result<ForwardedIdentity, Refusal> {
    ForwardedIdentity::from_headers(headers).map_err(|e| Refusal::from(&e))
}

/// Checks a login for `user`, the account looked up by the credentials'
/// username (`None` when there is none): the account exists, the password is its password, and the
/// forwarded certificate is the one bound to it. The password is verified
/// even for unknown users, so timing does not reveal which names exist.
///
/// # Errors
///
/// [`AuthError::Refused`] with the first factor that failed, in the order
/// user, password, certificate; [`AuthError::Password`] when the stored hash
/// is unreadable.
pub fn login(
    verifier: &Verifier,
    credentials: &Credentials,
    user: Option<User>,
    identity: &ForwardedIdentity,
) -> Result<User, AuthError> {
    let stored_hash = user.as_ref().map(|u| u.password_hash.as_str());
    let password_ok = verifier.verify(credentials.password.as_bytes(), stored_hash)?;

    let Some(user) = user else {
        return Err(Refusal::UnknownUser.into());
    };
    if !password_ok {
        return Err(Refusal::BadPassword.into());
    }
    check_binding(&user.binding, identity)?;
    Ok(user)
}

/// The live session of a request, checked against the certificate the
/// request came with: it must be the certificate the session logged in with
/// and still the one bound to the account.
///
/// # Errors
///
/// [`Refusal::MissingSession`], [`Refusal::UnknownSession`],
/// [`Refusal::IdentityMismatch`] (a session cookie replayed with another
/// certificate), or a store error.
pub fn session(
    store: &Store,
    headers: &HeaderMap,
    identity: &ForwardedIdentity,
    now: SystemTime,
) -> Result<(SessionToken, Session), AuthError> {
    let token = SessionToken::from_headers(headers).ok_or(Refusal::MissingSession)?;
    let session = store
        .find_session(&token.digest(), now)?
        .ok_or(Refusal::UnknownSession)?;

    if session.fingerprint != identity.fingerprint {
        return Err(Refusal::IdentityMismatch.into());
    }
    check_binding(&session.user.binding, identity)?;
    Ok((token, session))
}

fn check_binding(binding: &CertBinding, identity: &ForwardedIdentity) -> Result<(), Refusal> {
    let headers_present = match binding {
        CertBinding::Fingerprint(_) => true,
        CertBinding::IssuerSerial { .. } => identity.issuer.is_some() && identity.serial.is_some(),
    };
    if !headers_present {
        return Err(Refusal::MissingIdentity);
    }
    if !identity.matches(binding) {
        return Err(Refusal::IdentityMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::{COOKIE, HeaderValue};

    use super::*;
    use crate::befundserver::identity::Fingerprint;
    use crate::befundserver::password;

    const ISSUER: &str = "CN=Labor Befund CA,O=Labor";

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        verifier: Verifier,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(&dir.path().join("db.sqlite")).unwrap();
        let hash = password::hash(b"Stethoskop-7").unwrap();
        store
            .add_user("weber", &hash, &CertBinding::Fingerprint(fingerprint(1)))
            .unwrap();
        let serial_binding = CertBinding::IssuerSerial {
            issuer: ISSUER.to_owned(),
            serial: "9c01".parse().unwrap(),
        };
        store.add_user("brandt", &hash, &serial_binding).unwrap();
        Fixture {
            _dir: dir,
            store,
            verifier: Verifier::new().unwrap(),
        }
    }

    fn fingerprint(n: u8) -> Fingerprint {
        Fingerprint::of_der(&[n])
    }

    fn identity(n: u8, issuer: Option<&str>, serial: Option<&str>) -> ForwardedIdentity {
        ForwardedIdentity {
            fingerprint: fingerprint(n),
            issuer: issuer.map(str::to_owned),
            serial: serial.map(|s| s.parse().unwrap()),
        }
    }

    fn creds(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    fn try_login(
        f: &Fixture,
        creds: &Credentials,
        identity: &ForwardedIdentity,
    ) -> Result<User, AuthError> {
        let user = f.store.find_user(&creds.username).unwrap();
        login(&f.verifier, creds, user, identity)
    }

    fn refusal<T>(result: Result<T, AuthError>) -> Refusal {
        match result {
            Err(AuthError::Refused(r)) => r,
            Err(e) => panic!("expected a refusal, got error {e}"),
            Ok(_) => panic!("expected a refusal, got success"),
        }
    }

    #[test]
    fn login_with_all_three_factors_succeeds() {
        let f = fixture();

        let user = try_login(
            &f,
            &creds("weber", "Stethoskop-7"),
            &identity(1, None, None),
        )
        .unwrap();

        assert_eq!(user.username, "weber");
    }

    #[test]
    fn login_refusals_name_the_failed_factor() {
        let f = fixture();
        let cases = [
            (
                creds("nobody", "Stethoskop-7"),
                identity(1, None, None),
                Refusal::UnknownUser,
            ),
            (
                creds("weber", "wrong"),
                identity(1, None, None),
                Refusal::BadPassword,
            ),
            (
                creds("weber", "Stethoskop-7"),
                identity(2, None, None),
                Refusal::IdentityMismatch,
            ),
        ];

        for (creds, identity, expected) in cases {
            let got = refusal(try_login(&f, &creds, &identity));
            assert_eq!(got, expected, "{creds:?}");
        }
    }

    #[test]
    fn issuer_serial_login_needs_both_headers_and_both_values() {
        let f = fixture();
        let brandt = creds("brandt", "Stethoskop-7");
        let try_login = |id: ForwardedIdentity| try_login(&f, &brandt, &id);

        assert!(try_login(identity(7, Some(ISSUER), Some("9c01"))).is_ok());
        assert_eq!(
            refusal(try_login(identity(7, Some(ISSUER), None))),
            Refusal::MissingIdentity
        );
        assert_eq!(
            refusal(try_login(identity(7, None, Some("9c01")))),
            Refusal::MissingIdentity
        );
        assert_eq!(
            refusal(try_login(identity(7, Some("CN=Fremde CA"), Some("9c01")))),
            Refusal::IdentityMismatch
        );
        assert_eq!(
            refusal(try_login(identity(7, Some(ISSUER), Some("9c02")))),
            Refusal::IdentityMismatch
        );
    }

    #[test]
    fn session_is_refused_with_another_certificate() {
        let f = fixture();
        let weber = f.store.user("weber").unwrap();
        let token = SessionToken::generate().unwrap();
        let now = SystemTime::now();
        f.store
            .create_session(
                &token.digest(),
                weber.id,
                &fingerprint(1),
                now + Duration::from_secs(60),
            )
            .unwrap();
        let cookie = token.set_cookie(Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        let pair = cookie.split(';').next().unwrap();
        headers.insert(COOKIE, HeaderValue::from_str(pair).unwrap());

        let (_, own) = session(&f.store, &headers, &identity(1, None, None), now).unwrap();
        let replayed = session(&f.store, &headers, &identity(2, None, None), now);

        assert_eq!(own.user.username, "weber");
        assert_eq!(refusal(replayed), Refusal::IdentityMismatch);
        assert_eq!(
            refusal(session(
                &f.store,
                &HeaderMap::new(),
                &identity(1, None, None),
                now
            )),
            Refusal::MissingSession
        );
        let later = now + Duration::from_secs(61);
        assert_eq!(
            refusal(session(&f.store, &headers, &identity(1, None, None), later)),
            Refusal::UnknownSession
        );
    }

    #[test]
    fn credentials_debug_output_hides_the_password() {
        let shown = format!("{:?}", creds("weber", "Stethoskop-7"));

        assert!(shown.contains("weber"));
        assert!(!shown.contains("Stethoskop"));
    }
}
