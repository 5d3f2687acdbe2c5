//! HTTP responses: JSON for programs, small HTML pages for browsers.

use std::fmt::Write as _;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use super::db::{Report, ReportSummary};

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// Pages may load nothing and submit forms only to this server.
const CSP: &str = "default-src 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether the client asked for HTML rather than JSON. Browsers list
/// `text/html`; programs that list `application/json` (or only `*/*`) get JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    accept.contains("text/html") && !accept.contains("application/json")
}

/// A response with the headers every answer carries: reports are personal
/// health data, so nothing may be cached or sniffed.
fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A short plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    response(status, "text/plain; charset=utf-8", body)
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, "application/json", body),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    }
}

/// An HTML page with a restrictive content security policy.
pub fn html(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\">\
         <title>{}</title></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    );
    let mut response = response(status, "text/html; charset=utf-8", page);
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

/// `303 See Other` to `location`.
pub fn see_other(location: &'static str) -> HttpResponse {
    let mut response = text(StatusCode::SEE_OTHER, "");
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(location));
    response
}

/// The login form.
pub fn login_page() -> HttpResponse {
    html(
        StatusCode::OK,
        "Befundserver",
        "<h1>Befundserver</h1>\n\
         <form method=\"post\" action=\"/login\">\n\
         <label>Benutzername <input name=\"username\" autocomplete=\"username\" required></label>\n\
         <label>Passwort <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label>\n\
         <button type=\"submit\">Anmelden</button>\n</form>\n",
    )
}

/// The list of a user's reports.
pub fn report_list(username: &str, reports: &[ReportSummary], as_html: bool) -> HttpResponse {
    if !as_html {
        #[derive(Serialize)]
        struct List<'a> {
            username: &'a str,
            reports: &'a [ReportSummary],
        }
        return json(StatusCode::OK, &List { username, reports });
    }
    let mut body = format!("<h1>Befunde für {}</h1>\n<ul>\n", escape(username));
    for r in reports {
        let _ = writeln!(
            body,
            "<li><a href=\"/reports/{}\">{} – {} ({})</a></li>",
            r.id,
            escape(&r.collected_on),
            escape(&r.title),
            escape(&r.patient)
        );
    }
    body.push_str(
        "</ul>\n<form method=\"post\" action=\"/logout\"><button>Abmelden</button></form>\n",
    );
    html(StatusCode::OK, "Befunde", &body)
}

/// One report.
pub fn report_page(report: &Report, as_html: bool) -> HttpResponse {
    if as_html {
        html(StatusCode::OK, &report.title, &report_html(report))
    } else {
        json(StatusCode::OK, report)
    }
}

/// The HTML body of a report page.
fn report_html(report: &Report) -> String {
    let mut body = format!(
        "<h1>{}</h1>\n<p>Patient: {} · Probe vom {}</p>\n<table>\n\
         <tr><th>Analyt</th><th>Wert</th><th>Einheit</th><th>Referenz</th></tr>\n",
        escape(&report.title),
        escape(&report.patient),
        escape(&report.collected_on)
    );
    for a in &report.analytes {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.name),
            escape(&a.value),
            escape(&a.unit),
            escape(a.reference_range.as_deref().unwrap_or(""))
        );
    }
    let _ = write!(
        body,
        "</table>\n<p>{}</p>\n<p><a href=\"/reports\">Alle Befunde</a></p>\n",
        escape(&report.body)
    );
    body
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn browsers_get_html_and_programs_get_json() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

        assert!(wants_html(&accept(browser)));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&accept("application/json, text/html;q=0.1")));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn report_text_is_escaped_in_html() {
        let report = Report {
            id: 1,
            title: "<script>alert(1)</script>".to_owned(),
            patient: "P\"1'".to_owned(),
            collected_on: "2026-11-02".to_owned(),
            body: "a & b".to_owned(),
            analytes: vec![],
        };

        let body = report_html(&report);

        assert!(!body.contains("<script>"));
        assert!(body.contains("&lt;script&gt;"));
        assert!(body.contains("P&quot;1&#39;"));
        assert!(body.contains("a &amp; b"));
    }

    #[test]
    fn every_response_forbids_caching() {
        let response = text(StatusCode::FORBIDDEN, "forbidden\n");

        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    }
}
