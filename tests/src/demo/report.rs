//! The demo's protocol table: one row per access test, expected against
//! observed, with the filter counters that moved while it ran.

use std::fmt::Write as _;

/// What a row expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The access must be refused (TLS handshake, login or filter).
    Refused,
    /// The access must succeed.
    Admitted,
    /// Nothing may answer at all.
    Unreachable,
}

impl Expect {
    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Admitted => "admitted",
            Self::Unreachable => "impossible",
        }
    }
}

/// One access test and its outcome.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was tried.
    pub test: String,
    /// The real client used.
    pub client: String,
    /// Expected outcome.
    pub expected: Expect,
    /// Observed outcome.
    pub observed: Expect,
    /// What the client reported (exit code, alert, HTTP status, open ports).
    pub detail: String,
    /// Filter counter slots that moved: `(name, packets)`.
    pub counters: Vec<(String, u64)>,
}

impl Row {
    /// Whether the observation matches the expectation.
    pub fn passed(&self) -> bool {
        self.expected == self.observed
    }
}

/// Renders the rows as a plain-text table for the terminal.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "#",
        "access test",
        "client",
        "expected",
        "observed",
        "ok",
        "XDP counters moved",
        "detail",
    ];
    let body: Vec<[String; 8]> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            [
                (i + 1).to_string(),
                row.test.clone(),
                row.client.clone(),
                row.expected.label().to_owned(),
                row.observed.label().to_owned(),
                if row.passed() { "yes" } else { "NO" }.to_owned(),
                counters(&row.counters),
                row.detail.clone(),
            ]
        })
        .collect();

    let mut widths = header.map(str::len);
    for cells in &body {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for cells in &body {
        line(
            &mut out,
            &cells.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    out
}

fn counters(moved: &[(String, u64)]) -> String {
    if moved.is_empty() {
        return "-".to_owned();
    }
    moved
        .iter()
        .map(|(name, packets)| format!("{name}+{packets}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(expected: Expect, observed: Expect) -> Row {
        Row {
            test: "no client certificate".into(),
            client: "curl".into(),
            expected,
            observed,
            detail: "exit 56".into(),
            counters: vec![("proxy".into(), 6)],
        }
    }

    #[test]
    fn table_marks_deviating_rows() {
        let table = render(&[
            row(Expect::Refused, Expect::Refused),
            row(Expect::Refused, Expect::Admitted),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].contains(" yes "), "{table}");
        assert!(lines[3].contains(" NO "), "{table}");
        assert!(lines[2].contains("proxy+6"), "{table}");
    }
}
