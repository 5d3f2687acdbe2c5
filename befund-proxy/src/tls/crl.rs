//! Certificate revocation lists: what each configured CRL covers and until when.
//!
//! Policy (see `[tls] crl_expired`): a CRL past its `nextUpdate` can no longer
//! say whether a certificate was revoked since. With `refuse` (the default)
//! the verifier then refuses every client whose issuer that CRL belongs to
//! and the proxy logs an error naming the file and the date; with `warn` it
//! keeps using the stale CRL and logs a warning. Either way it warns
//! `crl_warning_days` before the date.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateRevocationListDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::dn::format_name;
use super::files::ConfigFile;
use crate::config::{ConfigError, CrlExpiredPolicy};

/// What the proxy knows about one configured CRL.
#[derive(Clone, Debug)]
pub struct CrlInfo {
    /// The file it was read from.
    pub file: PathBuf,
    /// The issuing CA's name (RFC 4514).
    pub issuer: String,
    /// The raw issuer name (DER), to match against CA subjects.
    pub issuer_der: Vec<u8>,
    /// `thisUpdate`.
    pub this_update: SystemTime,
    /// `nextUpdate`, if the CRL has one.
    pub next_update: Option<SystemTime>,
    /// Number of revoked certificates listed.
    pub revoked: usize,
    /// SHA-256 of the file's bytes as read, to notice when it changes.
    pub content_hash: [u8; 32],
}

/// How a CRL stands at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlStanding {
    /// Fresh: `nextUpdate` is further away than the warning period (or absent).
    Fresh,
    /// `nextUpdate` is within the warning period.
    ExpiresSoon,
    /// Past `nextUpdate`.
    Expired,
}

impl CrlInfo {
    /// Reads and parses a CRL file.
    pub fn load(
        file: &ConfigFile<'_>,
    ) -> Result<(Self, CertificateRevocationListDer<'static>), ConfigError> {
        let bytes = file.read()?;
        let content_hash = content_hash(&bytes);
        let der = file.crl_from(bytes)?;
        let (rest, crl) = CertificateRevocationList::from_der(der.as_ref())
            .map_err(|e| file.error(format!("not a valid X.509 CRL: {e}")))?;
        if !rest.is_empty() {
            return Err(file.error("trailing data after the CRL; give one CRL per file"));
        }
        let info = Self {
            file: file.path(),
            issuer: format_name(crl.issuer()),
            issuer_der: crl.issuer().as_raw().to_vec(),
            this_update: to_system_time(crl.last_update().timestamp()),
            next_update: crl.next_update().map(|t| to_system_time(t.timestamp())),
            revoked: crl.iter_revoked_certificates().count(),
            content_hash,
        };
        Ok((info, der))
    }

    /// The CRL's standing at `now`, warning `warning` ahead of `nextUpdate`.
    pub fn standing(&self, now: SystemTime, warning: Duration) -> CrlStanding {
        match self.next_update {
            None => CrlStanding::Fresh,
            Some(next) if next <= now => CrlStanding::Expired,
            Some(next) if next <= now + warning => CrlStanding::ExpiresSoon,
            Some(_) => CrlStanding::Fresh,
        }
    }

    /// `nextUpdate` as RFC 3339, or `never` when absent.
    pub fn next_update_text(&self) -> String {
        self.next_update
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| "never".to_owned())
    }
}

/// SHA-256 of a CRL file's bytes.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Watches the configured CRLs' dates and logs what the operator must know.
#[derive(Debug)]
pub struct CrlMonitor {
    crls: Vec<CrlInfo>,
    policy: CrlExpiredPolicy,
    warning: Duration,
    last_expired_report: Mutex<Option<Instant>>,
}

/// Least time between two error lines caused by refused clients of an expired CRL.
const EXPIRED_REPORT_INTERVAL: Duration = Duration::from_secs(60);

impl CrlMonitor {
    /// Watches `crls` under `policy`, warning `warning_days` ahead.
    pub fn new(crls: Vec<CrlInfo>, policy: CrlExpiredPolicy, warning_days: u32) -> Self {
        Self {
            crls,
            policy,
            warning: Duration::from_secs(u64::from(warning_days) * 86_400),
            last_expired_report: Mutex::new(None),
        }
    }

    /// The CRLs watched.
    pub fn crls(&self) -> &[CrlInfo] {
        &self.crls
    }

    /// How `crl` stands at `now` under this monitor's warning period.
    pub fn standing_of(&self, crl: &CrlInfo, now: SystemTime) -> CrlStanding {
        crl.standing(now, self.warning)
    }

    /// Logs each CRL that is expired or about to expire at `now`: error for an
    /// expired CRL under `refuse`, warn otherwise. Returns how many were logged.
    pub fn log_standing(&self, now: SystemTime) -> usize {
        let mut logged = 0;
        for crl in &self.crls {
            let file = crl.file.display();
            let next_update = crl.next_update_text();
            match (crl.standing(now, self.warning), self.policy) {
                (CrlStanding::Fresh, _) => continue,
                (CrlStanding::ExpiresSoon, _) => tracing::warn!(
                    %file, %next_update, issuer = %crl.issuer,
                    "CRL expires soon; install a fresh CRL and reload before then"
                ),
                (CrlStanding::Expired, CrlExpiredPolicy::Refuse) => tracing::error!(
                    %file, %next_update, issuer = %crl.issuer,
                    "CRL expired: refusing every client certificate of this issuer until a fresh \
                     CRL is installed and the proxy reloaded"
                ),
                (CrlStanding::Expired, CrlExpiredPolicy::Warn) => tracing::warn!(
                    %file, %next_update, issuer = %crl.issuer,
                    "CRL expired: still accepting clients of this issuer (crl_expired = \"warn\"); \
                     revocations made since are not seen"
                ),
            }
            logged += 1;
        }
        logged
    }

    /// Called when a client was refused because a CRL expired: logs the
    /// expired CRLs again, at most once a minute.
    pub fn report_refused_for_expiry(&self) {
        let mut last = self
            .last_expired_report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|t| t.elapsed() < EXPIRED_REPORT_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        let now = SystemTime::now();
        for crl in self
            .crls
            .iter()
            .filter(|c| c.standing(now, Duration::ZERO) == CrlStanding::Expired)
        {
            tracing::error!(
                file = %crl.file.display(), next_update = %crl.next_update_text(), issuer = %crl.issuer,
                "client refused: CRL expired; install a fresh CRL and reload"
            );
        }
    }

    /// When the standing of some CRL changes next (a warning period starts or
    /// a CRL expires), or `None` if nothing will change.
    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        self.crls
            .iter()
            .filter_map(|c| c.next_update)
            .flat_map(|next| {
                [
                    next.checked_sub(self.warning)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    next,
                ]
            })
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(next_update: Option<SystemTime>) -> CrlInfo {
        CrlInfo {
            file: "/etc/befund/ca.crl".into(),
            issuer: "CN=Lab CA".into(),
            issuer_der: vec![],
            this_update: SystemTime::UNIX_EPOCH,
            next_update,
            revoked: 0,
            content_hash: [0; 32],
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn crl_within_warning_period_expires_soon() {
        let now = SystemTime::now();
        let crl = info(Some(now + 3 * DAY));
        assert_eq!(crl.standing(now, 7 * DAY), CrlStanding::ExpiresSoon);
        assert_eq!(crl.standing(now, 2 * DAY), CrlStanding::Fresh);
    }

    #[test]
    fn crl_past_next_update_is_expired() {
        let now = SystemTime::now();
        assert_eq!(
            info(Some(now - DAY)).standing(now, 7 * DAY),
            CrlStanding::Expired
        );
    }

    #[test]
    fn crl_without_next_update_stays_fresh() {
        assert_eq!(
            info(None).standing(SystemTime::now(), 7 * DAY),
            CrlStanding::Fresh
        );
    }

    #[test]
    fn next_change_is_start_of_warning_then_expiry() {
        let now = SystemTime::now();
        let monitor = CrlMonitor::new(
            vec![info(Some(now + 10 * DAY))],
            CrlExpiredPolicy::Refuse,
            7,
        );
        assert_eq!(monitor.next_change(now), Some(now + 3 * DAY));
        assert_eq!(monitor.next_change(now + 4 * DAY), Some(now + 10 * DAY));
        assert_eq!(monitor.next_change(now + 11 * DAY), None);
    }
}
