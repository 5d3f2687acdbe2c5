//! Fictional demo reports and the parsing of report fields given on the
//! command line. No demo value belongs to a real person.

use std::str::FromStr;

use time::Date;
use time::macros::format_description;

use super::db::{Analyte, NewReport};

/// A sampling day, `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportDate(Date);

impl ReportDate {
    /// Today in UTC.
    pub fn today() -> Self {
        Self(time::OffsetDateTime::now_utc().date())
    }
}

impl FromStr for ReportDate {
    type Err = ReportArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s, format_description!("[year]-[month]-[day]"))
            .map(Self)
            .map_err(|_| ReportArgError::Date(s.to_owned()))
    }
}

impl std::fmt::Display for ReportDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Date`'s own Display is `YYYY-MM-DD`.
        self.0.fmt(f)
    }
}

/// A command-line analyte: `NAME=VALUE UNIT [REFERENCE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyteArg(pub Analyte);

impl FromStr for AnalyteArg {
    type Err = ReportArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReportArgError::Analyte(s.to_owned());
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(bad)?;
        let unit = fields.next().ok_or_else(bad)?;
        let reference = fields.collect::<Vec<_>>().join(" ");
        if name.trim().is_empty() {
            return Err(bad());
        }
        Ok(Self(Analyte {
            name: name.trim().to_owned(),
            value: value.to_owned(),
            unit: unit.to_owned(),
            reference_range: (!reference.is_empty()).then_some(reference),
        }))
    }
}

/// A report field given on the command line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportArgError {
    /// Not a calendar date.
    #[error("date {0:?} is not a calendar day; write it as YYYY-MM-DD")]
    Date(String),
    /// Not `NAME=VALUE UNIT [REFERENCE]`.
    #[error("analyte {0:?} is not NAME=VALUE UNIT [REFERENCE], e.g. \"Kalium=4.1 mmol/l 3.5-5.1\"")]
    Analyte(String),
}

fn analyte(name: &str, value: &str, unit: &str, reference: &str) -> Analyte {
    Analyte {
        name: name.to_owned(),
        value: value.to_owned(),
        unit: unit.to_owned(),
        reference_range: Some(reference.to_owned()),
    }
}

/// Three fictional reports for the physician `username`. Patient pseudonyms
/// carry a prefix derived from the username, so the demo shows at a glance
/// whose reports a page lists.
pub fn demo_reports(username: &str) -> Vec<NewReport> {
    let prefix: String = username
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect::<String>()
        .to_ascii_uppercase();
    let patient = |n: u32| format!("PSN-{prefix}-{n:04}");

    vec![
        NewReport {
            title: "Kleines Blutbild".to_owned(),
            patient: patient(1042),
            collected_on: "2026-11-24".to_owned(),
            body: "Blutbild ohne pathologischen Befund.".to_owned(),
            analytes: vec![
                analyte("Hämoglobin", "14.1", "g/dl", "13.5-17.5"),
                analyte("Leukozyten", "6.8", "/nl", "3.9-10.2"),
                analyte("Thrombozyten", "251", "/nl", "150-370"),
            ],
        },
        NewReport {
            title: "Lipidprofil".to_owned(),
            patient: patient(1042),
            collected_on: "2026-11-27".to_owned(),
            body: "LDL-Cholesterin leicht erhöht; Kontrolle in drei Monaten empfohlen.".to_owned(),
            analytes: vec![
                analyte("Gesamtcholesterin", "221", "mg/dl", "<200"),
                analyte("LDL-Cholesterin", "148", "mg/dl", "<116"),
                analyte("HDL-Cholesterin", "52", "mg/dl", ">40"),
            ],
        },
        NewReport {
            title: "Schilddrüse".to_owned(),
            patient: patient(2317),
            collected_on: "2026-12-01".to_owned(),
            body: "Euthyreote Stoffwechsellage.".to_owned(),
            analytes: vec![
                analyte("TSH", "1.9", "mU/l", "0.27-4.2"),
                analyte("fT4", "1.3", "ng/dl", "0.9-1.7"),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_real_calendar_days() {
        assert_eq!(
            "2026-02-28".parse::<ReportDate>().unwrap().to_string(),
            "2026-02-28"
        );
        assert!("2026-02-30".parse::<ReportDate>().is_err());
        assert!("28.02.2026".parse::<ReportDate>().is_err());
    }

    #[test]
    fn analyte_argument_with_and_without_reference() {
        let with: AnalyteArg = "Kalium=4.1 mmol/l 3.5-5.1".parse().unwrap();
        let without: AnalyteArg = "CRP=<0.5 mg/dl".parse().unwrap();

        assert_eq!(with.0.reference_range.as_deref(), Some("3.5-5.1"));
        assert_eq!(
            (without.0.value.as_str(), without.0.reference_range),
            ("<0.5", None)
        );
        assert!("Kalium 4.1".parse::<AnalyteArg>().is_err());
        assert!("=4.1 mmol/l".parse::<AnalyteArg>().is_err());
    }

    #[test]
    fn demo_pseudonyms_are_prefixed_per_physician() {
        let weber = demo_reports("dr.weber");
        let brandt = demo_reports("brandt");

        assert!(weber.iter().all(|r| r.patient.starts_with("PSN-DRW-")));
        assert!(brandt.iter().all(|r| r.patient.starts_with("PSN-BRA-")));
    }
}
