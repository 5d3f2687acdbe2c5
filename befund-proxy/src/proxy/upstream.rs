//! The HTTP/1.1 client to the Befundserver (plain http, or https verified
//! against `[upstream] ca` with an optional client certificate), with its
//! pool of kept-alive connections ([`super::pool`]).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::uri::{Parts, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tower_service::Service as _;

use super::activity::RequestBody;
use super::pool::{Pool, UpstreamBody, UpstreamConn};
use crate::config::{Config, ConfigError, UpstreamScheme, UpstreamUrl};
use crate::tls::crypto_provider;
use crate::tls::files::ConfigFile;

/// Why an exchange with the Befundserver failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (TCP or TLS).
    #[error("cannot connect to the befundserver: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while sending the request or receiving the
    /// response head.
    #[error("exchange with the befundserver failed: {0}")]
    Exchange(#[source] hyper::Error),
}

/// What a connection to the Befundserver runs on.
pub type UpstreamIo = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The client to the Befundserver.
#[derive(Clone, Debug)]
pub struct Upstream {
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool<UpstreamIo>>,
    base: UpstreamUrl,
    /// `scheme://authority`, what the connector connects to.
    origin: Uri,
    /// The `Host` of requests: the URL's host, and its port unless it is the
    /// scheme's default.
    host: HeaderValue,
    response_timeout: Duration,
}

impl Upstream {
    /// Builds the client from `[upstream]`, reading its CA and certificate files.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let upstream = &config.upstream;
        let tls = client_tls_config(config)?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(upstream.connect_timeout));

        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let connector = match upstream.url.scheme() {
            UpstreamScheme::Https => builder.https_only().enable_http1().wrap_connector(http),
            UpstreamScheme::Http => builder.https_or_http().enable_http1().wrap_connector(http),
        };
        let base = upstream.url.clone();
        let mut origin = Parts::default();
        origin.scheme = Some(base.uri().scheme().cloned().unwrap_or(Scheme::HTTP));
        origin.authority = Some(base.authority().clone());
        origin.path_and_query = Some(PathAndQuery::from_static("/"));
        let origin = Uri::from_parts(origin).map_err(|e| ConfigError::Invalid {
            path: config.source.clone(),
            key: "upstream.url".into(),
            problem: format!("not usable as the Befundserver's origin: {e}"),
        })?;
        let host = host_header(&origin).map_err(|e| ConfigError::Invalid {
            path: config.source.clone(),
            key: "upstream.url".into(),
            problem: format!("its host is not a valid Host header: {e}"),
        })?;
        Ok(Self {
            connector,
            pool: Pool::new(upstream.pool_max_idle, upstream.pool_idle_timeout),
            base,
            origin,
            host,
            response_timeout: upstream.response_timeout,
        })
    }

    /// The same client with a pool of its own, for one of `shares` connection
    /// workers: it keeps `pool_max_idle / shares` idle connections (rounded
    /// up), so that all pools together keep about `pool_max_idle`.
    pub fn with_own_pool(&self, shares: usize) -> Self {
        Self {
            pool: Pool::new(
                self.pool.max_idle().div_ceil(shares.max(1)),
                self.pool.idle_timeout(),
            ),
            ..self.clone()
        }
    }

    /// The Befundserver's `host:port` (the scheme's port when the URL has
    /// none), for reachability checks.
    pub fn authority(&self) -> String {
        let authority = self.base.authority();
        let port = authority.port_u16().unwrap_or(match self.base.scheme() {
            UpstreamScheme::Https => 443,
            UpstreamScheme::Http => 80,
        });
        format!("{}:{port}", authority.host())
    }

    /// How long to wait for a response head.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The Befundserver URL for a client's `path_and_query`.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        // The parts are shared, not copied or parsed again.
        let mut parts = Parts::default();
        parts.scheme = Some(self.base.uri().scheme().cloned().unwrap_or(Scheme::HTTP));
        parts.authority = Some(self.base.authority().clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Ok(Uri::from_parts(parts)?)
    }

    /// Sends `request` (its URI from [`Self::uri_for`]) on an idle connection,
    /// or on a new one, with the Befundserver's `Host`. A request that a
    /// reused connection closed before sending goes out on another one.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        origin_form(request.uri_mut());
        request.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut upstream, reused) = match self.pool.checkout() {
                Some(upstream) => (upstream, true),
                None => (self.connect().await?, false),
            };
            match upstream.send(request).await {
                Ok(response) => {
                    let pool = self.pool.clone();
                    return Ok(response.map(|body| UpstreamBody::new(body, upstream, pool)));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(UpstreamError::Exchange(error.into_error())),
                },
            }
        }
    }

    /// Opens a connection. It is driven by whoever sends on it (see
    /// [`super::pool`]).
    async fn connect(&self) -> Result<UpstreamConn<UpstreamIo>, UpstreamError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(UpstreamConn::new(sender, connection))
    }
}

/// The request target as sent to an origin server: path and query only.
fn origin_form(uri: &mut Uri) {
    let mut parts = Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    *uri = Uri::from_parts(parts).unwrap_or_default();
}

/// `host`, or `host:port` for a port other than the scheme's default.
fn host_header(origin: &Uri) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let host = origin.host().unwrap_or_default();
    let default_port = if origin.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    match origin.port_u16() {
        Some(port) if port != default_port => HeaderValue::try_from(format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    }
}

fn client_tls_config(config: &Config) -> Result<ClientConfig, ConfigError> {
    let upstream = &config.upstream;
    let source = &config.source;
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &upstream.ca {
        let file = ConfigFile::new(source, "upstream.ca", ca);
        for (index, cert) in file.certificates()?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                file.error(format!(
                    "certificate #{} is not a usable CA certificate: {e}",
                    index + 1
                ))
            })?;
        }
    }

    let builder = ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::Invalid {
            path: source.clone(),
            key: "upstream".into(),
            problem: format!("TLS versions rejected by the provider: {e}"),
        })?
        .with_root_certificates(roots);

    match (&upstream.client_certificate, &upstream.client_key) {
        (Some(cert), Some(key)) => {
            let cert_file = ConfigFile::new(source, "upstream.client_certificate", cert);
            let key_file = ConfigFile::new(source, "upstream.client_key", key);
            let chain = cert_file.certificates()?;
            let key_der = key_file.private_key()?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                key_file.error(format!(
                    "cannot be used with the certificate in {}: {e}; give the key issued with it",
                    cert.display()
                ))
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_names_the_port_only_when_it_is_not_the_default() {
        for (origin, host) in [
            ("http://befundserver.lab/", "befundserver.lab"),
            ("http://befundserver.lab:80/", "befundserver.lab"),
            ("http://10.20.0.5:8080/", "10.20.0.5:8080"),
            ("https://befundserver.lab:443/", "befundserver.lab"),
            ("https://befundserver.lab:8443/", "befundserver.lab:8443"),
            ("https://[2001:db8::5]:8443/", "[2001:db8::5]:8443"),
        ] {
            let origin: Uri = origin.parse().unwrap();
            assert_eq!(host_header(&origin).unwrap(), host, "{origin}");
        }
    }

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        for (absolute, target) in [
            (
                "http://befundserver.lab:8080/befunde?id=4711",
                "/befunde?id=4711",
            ),
            ("http://befundserver.lab:8080/", "/"),
            ("http://befundserver.lab:8080", "/"),
        ] {
            let mut uri: Uri = absolute.parse().unwrap();
            origin_form(&mut uri);
            assert_eq!(uri, target);
        }
    }
}
