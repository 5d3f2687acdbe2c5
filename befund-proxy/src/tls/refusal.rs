//! Why a TLS handshake was refused, and how often each reason occurred.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::{CertificateError, Error as TlsError};

/// The reason a client was turned away during the TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to a configured client CA.
    UnknownIssuer,
    /// The certificate (or one in its chain) is past its notAfter.
    Expired,
    /// The certificate (or one in its chain) is before its notBefore.
    NotYetValid,
    /// The certificate is listed in a CRL.
    Revoked,
    /// A signature does not verify: on the certificate, or the client's
    /// CertificateVerify was not made with the certificate's key.
    BadSignature,
    /// The certificate is not meant for TLS client authentication (EKU).
    WrongUsage,
    /// The CRL of the certificate's issuer is past its nextUpdate (policy `refuse`).
    CrlExpired,
    /// Anything else that breaks the TLS protocol (including plain HTTP on the
    /// HTTPS port and connections closed mid-handshake).
    Protocol,
    /// The handshake did not complete within `limits.handshake_timeout`.
    Timeout,
}

impl RefusalReason {
    /// Every reason, in the order of [`RefusalCounters`].
    pub const ALL: [Self; 10] = [
        Self::NoCertificate,
        Self::UnknownIssuer,
        Self::Expired,
        Self::NotYetValid,
        Self::Revoked,
        Self::BadSignature,
        Self::WrongUsage,
        Self::CrlExpired,
        Self::Protocol,
        Self::Timeout,
    ];

    /// The name used in logs and metrics, e.g. `no_certificate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::BadSignature => "bad_signature",
            Self::WrongUsage => "wrong_usage",
            Self::CrlExpired => "crl_expired",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }

    /// Classifies the error a failed server-side handshake returned.
    pub fn classify(error: &io::Error) -> Self {
        if error.kind() == io::ErrorKind::TimedOut {
            return Self::Timeout;
        }
        match error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            Some(tls) => Self::from_tls_error(tls),
            None => Self::Protocol,
        }
    }

    /// Maps a rustls error to a reason.
    pub fn from_tls_error(error: &TlsError) -> Self {
        match error {
            TlsError::NoCertificatesPresented => Self::NoCertificate,
            TlsError::InvalidCertificate(cert) => Self::from_certificate_error(cert),
            _ => Self::Protocol,
        }
    }

    fn from_certificate_error(error: &CertificateError) -> Self {
        use CertificateError as E;
        match error {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::Expired | E::ExpiredContext { .. } => Self::Expired,
            E::NotValidYet | E::NotValidYetContext { .. } => Self::NotYetValid,
            E::Revoked => Self::Revoked,
            E::BadSignature => Self::BadSignature,
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => Self::WrongUsage,
            E::ExpiredRevocationList | E::ExpiredRevocationListContext { .. } => Self::CrlExpired,
            _ => Self::Protocol,
        }
    }

    /// Whether this refusal is the peer's doing (logged at warn) rather than an
    /// ordinary event such as a client that went away (logged at info).
    pub fn is_peer_misbehaviour(self) -> bool {
        !matches!(self, Self::Timeout | Self::CrlExpired)
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter per refusal reason, readable at any time (for metrics).
#[derive(Debug, Default)]
pub struct RefusalCounters {
    counts: [AtomicU64; RefusalReason::ALL.len()],
}

impl RefusalCounters {
    /// Counts one refusal.
    pub fn record(&self, reason: RefusalReason) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals counted so far for `reason`.
    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count.
    pub fn snapshot(&self) -> Vec<(RefusalReason, u64)> {
        RefusalReason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_name() {
        let mut names: Vec<_> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RefusalReason::ALL.len());
    }

    #[test]
    fn expired_crl_is_classified_as_crl_expired() {
        let error = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::ExpiredRevocationList),
        );
        assert_eq!(RefusalReason::classify(&error), RefusalReason::CrlExpired);
    }

    #[test]
    fn missing_certificate_is_classified_as_no_certificate() {
        let error = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::NoCertificatesPresented,
        );
        assert_eq!(
            RefusalReason::classify(&error),
            RefusalReason::NoCertificate
        );
    }

    #[test]
    fn connection_closed_mid_handshake_is_a_protocol_refusal() {
        let error = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(RefusalReason::classify(&error), RefusalReason::Protocol);
    }

    #[test]
    fn counters_count_each_reason_separately() {
        let counters = RefusalCounters::default();
        counters.record(RefusalReason::Revoked);
        counters.record(RefusalReason::Revoked);
        counters.record(RefusalReason::Timeout);
        assert_eq!(counters.get(RefusalReason::Revoked), 2);
        assert_eq!(counters.get(RefusalReason::Timeout), 1);
        assert_eq!(counters.get(RefusalReason::Expired), 0);
    }
}
