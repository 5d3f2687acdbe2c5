//! The pooled HTTP/1.1 client to the Befundserver (plain http, or https
//! verified against `[upstream] ca` with an optional client certificate).

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::{Parts, PathAndQuery, Scheme};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::{Config, ConfigError, UpstreamScheme, UpstreamUrl};
use crate::tls::crypto_provider;
use crate::tls::files::ConfigFile;

/// The connection pool to the Befundserver.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    base: UpstreamUrl,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(upstream.pool_max_idle)
            .pool_idle_timeout(upstream.pool_idle_timeout)
            .build(connector);
        Ok(Self {
            client,
            base: upstream.url.clone(),
            response_timeout: upstream.response_timeout,
        })
    }

    /// The client, for sending requests.
    pub fn client(&self) -> &Client<HttpsConnector<HttpConnector>, Incoming> {
        &self.client
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
