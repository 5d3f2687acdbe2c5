//! The HTTP service: routing, the proxy-secret gate, login, logout and the
//! report pages.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, SET_COOKIE};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use super::auth::{self, AuthError, Credentials, Refusal};
use super::db::{Session, Store};
use super::password::{PasswordError, Verifier};
use super::proxy_secret::{ProxySecret, SecretCheck};
use super::render::{self, HttpResponse};
use super::session::{self, SessionToken};

/// Largest login form accepted; username and password fit many times over.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Time a client has to send its request headers; the proxy sends them at
/// once, so this only limits idle or stalled connections.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (say, out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Shared state of the service.
pub struct App {
    store: Mutex<Store>,
    verifier: Verifier,
    secret: ProxySecret,
    session_ttl: Duration,
}

impl App {
    /// Builds the service state.
    ///
    /// # Errors
    ///
    /// [`PasswordError`] when the decoy hash for unknown users cannot be
    /// made (no random bytes).
    pub fn new(
        store: Store,
        secret: ProxySecret,
        session_ttl: Duration,
    ) -> Result<Self, PasswordError> {
        Ok(Self {
            store: Mutex::new(store),
            verifier: Verifier::new()?,
            secret,
            session_ttl,
        })
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then waits up to
/// a grace period for requests in flight.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        debug!(%peer, "connection accepted");
        let app = Arc::clone(&app);
        let service = service_fn(move |req| handle(Arc::clone(&app), peer, req));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }

    drop(listener);
    info!("shutting down");
    tokio::select! {
        () = graceful.shutdown() => info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("grace period over, dropping connections"),
    }
}

/// Answers one request. Everything but `/healthz` requires the proxy secret;
/// the decision itself runs on a blocking thread (SQLite and Argon2).
async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let (parts, body) = req.into_parts();

    if parts.uri.path() == "/healthz" && parts.method == Method::GET {
        return Ok(render::text(StatusCode::OK, "ok\n"));
    }
    if let Some(refusal) = secret_refusal(&app.secret, &parts) {
        warn!(%peer, path = parts.uri.path(), reason = %refusal, "request refused");
        return Ok(render::text(StatusCode::FORBIDDEN, "forbidden\n"));
    }

    let body = if parts.method == Method::POST {
        match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return Ok(render::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request too large\n",
                ));
            }
        }
    } else {
        Bytes::new()
    };

    let response = tokio::task::spawn_blocking(move || app.route(&parts, &body))
        .await
        .unwrap_or_else(|e| {
            error!(error = %e, "request handler panicked");
            render::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        });
    Ok(response)
}

fn secret_refusal(secret: &ProxySecret, parts: &Parts) -> Option<Refusal> {
    match secret.check(&parts.headers) {
        SecretCheck::Valid => None,
        SecretCheck::Missing => Some(Refusal::MissingProxySecret),
        SecretCheck::Wrong => Some(Refusal::BadProxySecret),
    }
}

/// The client address the proxy reports (trusted: the secret was checked).
fn client(parts: &Parts) -> &str {
    parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

impl App {
    fn route(&self, parts: &Parts, body: &Bytes) -> HttpResponse {
        let path = parts.uri.path();
        let method = &parts.method;

        match (method, path) {
            (&Method::GET, "/") => render::login_page(),
            (&Method::POST, "/login") => self.login(parts, body),
            (&Method::POST, "/logout") => self.logout(parts),
            (&Method::GET, "/reports") => self.list_reports(parts),
            (&Method::GET, _) if path.starts_with("/reports/") => {
                self.show_report(parts, &path["/reports/".len()..])
            }
            (_, "/" | "/healthz" | "/reports") => method_not_allowed("GET"),
            (_, "/login" | "/logout") => method_not_allowed("POST"),
            _ => render::text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn login(&self, parts: &Parts, body: &Bytes) -> HttpResponse {
        let Some(credentials) = parse_login_form(parts, body) else {
            return render::text(
                StatusCode::BAD_REQUEST,
                "expected a form with username and password\n",
            );
        };
        let username = credentials.username.as_str();

        let identity = match auth::forwarded_identity(&parts.headers) {
            Ok(identity) => identity,
            Err(refusal) => return login_refused(parts, username, refusal),
        };
        let user = match self.lock_store().find_user(username) {
            Ok(user) => user,
            Err(e) => return internal_error(&e),
        };
        // Argon2 runs without the database lock held.
        let user = match auth::login(&self.verifier, &credentials, user, &identity) {
            Ok(user) => user,
            Err(AuthError::Refused(refusal)) => return login_refused(parts, username, refusal),
            Err(e) => return internal_error(&e),
        };

        let token = match SessionToken::generate() {
            Ok(token) => token,
            Err(e) => return internal_error(&e),
        };
        let now = SystemTime::now();
        let store = self.lock_store();
        let stored = store.purge_expired_sessions(now).and_then(|_| {
            store.create_session(
                &token.digest(),
                user.id,
                &identity.fingerprint,
                now + self.session_ttl,
            )
        });
        if let Err(e) = stored {
            return internal_error(&e);
        }
        info!(
            username = ?user.username,
            client = client(parts),
            fingerprint = %identity.fingerprint,
            "login accepted"
        );

        let mut response = if render::wants_html(&parts.headers) {
            render::see_other("/reports")
        } else {
            #[derive(Serialize)]
            struct LoggedIn<'a> {
                username: &'a str,
            }
            render::json(
                StatusCode::OK,
                &LoggedIn {
                    username: &user.username,
                },
            )
        };
        set_cookie(&mut response, &token.set_cookie(self.session_ttl));
        response
    }

    fn logout(&self, parts: &Parts) -> HttpResponse {
        let store = self.lock_store();
        let (token, session) = match self.authenticate(&store, parts) {
            Ok(found) => found,
            Err(e) => return session_refused(parts, e),
        };
        if let Err(e) = store.delete_session(&token.digest()) {
            return internal_error(&e);
        }
        info!(username = ?session.user.username, client = client(parts), "logout");

        let mut response = if render::wants_html(&parts.headers) {
            render::see_other("/")
        } else {
            render::text(StatusCode::OK, "logged out\n")
        };
        set_cookie(&mut response, &session::clear_cookie());
        response
    }

    fn list_reports(&self, parts: &Parts) -> HttpResponse {
        let store = self.lock_store();
        let (_, session) = match self.authenticate(&store, parts) {
            Ok(found) => found,
            Err(e) => return session_refused(parts, e),
        };
        match store.reports_of(session.user.id) {
            Ok(reports) => render::report_list(
                &session.user.username,
                &reports,
                render::wants_html(&parts.headers),
            ),
            Err(e) => internal_error(&e),
        }
    }

    fn show_report(&self, parts: &Parts, id: &str) -> HttpResponse {
        let store = self.lock_store();
        let (_, session) = match self.authenticate(&store, parts) {
            Ok(found) => found,
            Err(e) => return session_refused(parts, e),
        };
        // A malformed id, another user's report and a missing one all look
        // the same from outside.
        let report = match id.parse::<i64>() {
            Ok(id) => store.report_of(session.user.id, id),
            Err(_) => Ok(None),
        };
        match report {
            Ok(Some(report)) => render::report_page(&report, render::wants_html(&parts.headers)),
            Ok(None) => {
                debug!(username = ?session.user.username, report = id, "no such report for user");
                render::text(StatusCode::NOT_FOUND, "not found\n")
            }
            Err(e) => internal_error(&e),
        }
    }

    /// The request's session, checked against its certificate.
    fn authenticate(
        &self,
        store: &Store,
        parts: &Parts,
    ) -> Result<(SessionToken, Session), AuthError> {
        let identity = auth::forwarded_identity(&parts.headers)?;
        auth::session(store, &parts.headers, &identity, SystemTime::now())
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves no half-done write behind
        // (every multi-statement write is one SQLite transaction), so the
        // store stays usable.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Username and password from an `application/x-www-form-urlencoded` body;
/// `None` when the type is wrong or a field is missing or repeated.
fn parse_login_form(parts: &Parts, body: &Bytes) -> Option<Credentials> {
    let content_type = parts.headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media_type = content_type.split(';').next()?.trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return None;
    }

    let mut username = None;
    let mut password = None;
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "username" => &mut username,
            "password" => &mut password,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return None;
        }
    }
    Some(Credentials {
        username: username?,
        password: password?,
    })
}

/// Logs why a request of a session was refused and answers it.
fn session_refused(parts: &Parts, e: AuthError) -> HttpResponse {
    let AuthError::Refused(refusal) = e else {
        return internal_error(&e);
    };
    warn!(
        path = parts.uri.path(),
        client = client(parts),
        reason = %refusal,
        "request refused"
    );
    render::text(StatusCode::UNAUTHORIZED, "login required\n")
}

fn login_refused(parts: &Parts, username: &str, refusal: Refusal) -> HttpResponse {
    warn!(
        username = ?username,
        client = client(parts),
        reason = %refusal,
        "login refused"
    );
    render::text(StatusCode::UNAUTHORIZED, "login failed\n")
}

fn internal_error(e: &dyn std::error::Error) -> HttpResponse {
    error!(error = %e, "request failed");
    render::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = render::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn set_cookie(response: &mut HttpResponse, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn parts(content_type: &'static str) -> Parts {
        let (parts, ()) = Request::post("/login")
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn login_form_is_decoded() {
        let body = Bytes::from_static(b"username=weber&password=S%C3%BC%C3%9F+%26+sauer&extra=1");

        let creds = parse_login_form(
            &parts("application/x-www-form-urlencoded; charset=UTF-8"),
            &body,
        )
        .unwrap();

        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("weber", "Süß & sauer")
        );
    }

    #[test]
    fn login_form_with_wrong_type_or_repeated_field_is_rejected() {
        let form = "application/x-www-form-urlencoded";
        let repeated = Bytes::from_static(b"username=a&username=b&password=x");
        let missing = Bytes::from_static(b"username=a");
        let fine = Bytes::from_static(b"username=a&password=x");

        assert!(parse_login_form(&parts(form), &repeated).is_none());
        assert!(parse_login_form(&parts(form), &missing).is_none());
        assert!(parse_login_form(&parts("application/json"), &fine).is_none());
    }
}
