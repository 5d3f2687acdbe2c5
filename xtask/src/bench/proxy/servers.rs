//! The three servers of the bench, all in the gateway namespace: the shared
//! upstream (nginx answering 200 from memory), befund-proxy, and nginx as
//! the mTLS proxy to compare with.
//!
//! Both proxies get the same certificates and CRL, TLS 1.2 and 1.3 with the
//! same AEAD suites in the same order and no session resumption, the same
//! number of worker threads, the same identity headers and shared secret to
//! the upstream, a kept-alive upstream pool of the same size, and one audit
//! line per request written to a file.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context as _, Result, bail};

use super::{
    lab::{self, Lab},
    pki::{Pki, SERVER_NAME, path_str},
    processes,
};

/// Idle connections each proxy keeps to the upstream, in total: more than
/// the load generator's connections, so neither proxy closes and reopens
/// upstream connections while the load runs. nginx's `keepalive` counts per
/// worker, so each of its workers gets an equal share.
const UPSTREAM_POOL: u32 = 64;

/// Idle keep-alive timeout of both proxies: longer than opening the idle
/// scenario's connections, settling and reading memory take, so that no
/// held connection is closed before it is measured.
pub const IDLE_TIMEOUT_SECONDS: u32 = 900;

/// Connections each proxy may serve beyond the idle scenario's: the
/// upstream pool and the checks need a few, and the limit must never be
/// what closes a connection.
pub const CONNECTION_MARGIN: u32 = 1024;

/// Soft limit on open files befund-proxy is started with: Linux's and
/// systemd's default, which the daemon raises to the hard limit itself.
pub const NOFILE_SOFT_AT_START: u64 = 1024;

/// TLS 1.2 suites of befund-proxy, in its order, in OpenSSL's names.
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:\
                             ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:\
                             ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305";
/// TLS 1.3 suites of befund-proxy, in its order.
const TLS13_SUITES: &str = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:\
                            TLS_CHACHA20_POLY1305_SHA256";

/// The two proxies under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// befund-proxy.
    Ours,
    /// nginx configured the same way.
    Nginx,
}

impl Proxy {
    /// Both, in a fixed order.
    pub const BOTH: [Self; 2] = [Self::Ours, Self::Nginx];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "befund-proxy",
            Self::Nginx => "nginx",
        }
    }

    /// The name it was started under in the [`Lab`].
    pub fn service(self) -> &'static str {
        match self {
            Self::Ours => "befund-proxy",
            Self::Nginx => "nginx",
        }
    }

    /// The address the proxy listens on (port 443).
    pub fn addr(self) -> SocketAddr {
        let ip = match self {
            Self::Ours => lab::OURS_ADDR,
            Self::Nginx => lab::NGINX_ADDR,
        };
        SocketAddr::new(ip.parse().expect("constant address"), 443)
    }

    /// The file the proxy writes its per-request audit lines to.
    pub fn audit_log(self, lab: &Lab) -> std::path::PathBuf {
        lab.dir.join(match self {
            Self::Ours => "ours-audit.jsonl",
            Self::Nginx => "nginx-audit.jsonl",
        })
    }
}

/// What both proxies are configured for.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Worker threads (befund-proxy) and worker processes (nginx).
    pub workers: usize,
    /// Connections served at once (befund-proxy's `max_connections`,
    /// nginx's `worker_connections`, which counts per worker).
    pub max_connections: u32,
    /// The hard limit on open files both proxies run with (nginx's
    /// `worker_rlimit_nofile`); the bench's own, which it cannot raise.
    pub open_files: u64,
}

/// Starts the upstream, befund-proxy and nginx, and waits until each accepts
/// connections.
pub fn start_all(lab: &mut Lab, pki: &Pki, befund_proxy: &Path, capacity: Capacity) -> Result<()> {
    let gateway = lab.gateway_ns.clone();
    let client = lab.client_ns.clone();

    let upstream_conf = write(lab, "upstream.conf", &upstream_config(lab, capacity)?)?;
    let cmd = nginx_command(lab, &upstream_conf)?;
    lab.spawn("upstream", cmd)?;
    let upstream: SocketAddr = lab::UPSTREAM.parse()?;
    lab.wait_for_port("the upstream", &gateway, upstream)?;

    let ours_conf = write(lab, "befund.toml", &ours_config(lab, pki, capacity)?)?;
    let check = crate::command::output(
        lab.command(&gateway, befund_proxy)
            .args(["check-config", "--config"])
            .arg(&ours_conf),
    );
    if let Err(e) = check {
        bail!("the bench's befund-proxy configuration is invalid: {e:#}");
    }
    // Started the way systemd starts a service without LimitNOFILE=: a soft
    // limit of 1024 below a higher hard limit. prlimit replaces itself with
    // the daemon, so the spawned process id stays the daemon's.
    let mut cmd = lab.command(&gateway, "prlimit");
    cmd.arg(format!(
        "--nofile={NOFILE_SOFT_AT_START}:{}",
        capacity.open_files
    ))
    .arg(befund_proxy)
    .args(["run", "--config"])
    .arg(&ours_conf);
    lab.spawn(Proxy::Ours.service(), cmd)?;
    lab.wait_for_port("befund-proxy", &client, Proxy::Ours.addr())?;
    check_open_file_limit(lab, capacity)?;

    let nginx_conf = write(lab, "nginx.conf", &nginx_config(lab, pki, capacity)?)?;
    let cmd = nginx_command(lab, &nginx_conf)?;
    lab.spawn(Proxy::Nginx.service(), cmd)?;
    lab.wait_for_port("nginx", &client, Proxy::Nginx.addr())
}

/// befund-proxy must have raised its soft limit on open files far enough
/// for the idle connections; the bench cannot raise it from outside.
fn check_open_file_limit(lab: &Lab, capacity: Capacity) -> Result<()> {
    let pid = lab
        .pid(Proxy::Ours.service())
        .context("befund-proxy is not running")?;
    let (soft, _) = processes::open_file_limit(pid)?;
    let needed = u64::from(capacity.max_connections);
    if soft < needed {
        bail!(
            "befund-proxy runs with an open-file limit of {soft}, below the {needed} the idle \
             connections need; it was started with {NOFILE_SOFT_AT_START} (hard {}) and should \
             have raised it to the hard limit",
            capacity.open_files
        );
    }
    eprintln!(
        "bench: befund-proxy raised its open-file limit from {NOFILE_SOFT_AT_START} to {soft} \
         itself"
    );
    Ok(())
}

fn write(lab: &Lab, name: &str, text: &str) -> Result<std::path::PathBuf> {
    let path = lab.dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// nginx in the foreground with its own prefix, so it touches nothing of a
/// system nginx (logs, temp files, pid file).
fn nginx_command(lab: &Lab, conf: &Path) -> Result<std::process::Command> {
    let name = conf
        .file_stem()
        .and_then(|s| s.to_str())
        .context("configuration file name")?;
    let prefix = lab.dir.join(format!("{name}-prefix"));
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(prefix.join(sub))?;
    }
    let mut cmd = lab.command(&lab.gateway_ns, "nginx");
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(lab.log_path(&format!("{name}-error")))
        .arg("-c")
        .arg(conf);
    Ok(cmd)
}

/// Settings both nginx instances share: foreground, own temp directories,
/// workers and their connection and open-file limits.
fn nginx_main(lab: &Lab, name: &str, capacity: Capacity) -> Result<String> {
    let Capacity {
        workers,
        max_connections,
        open_files,
    } = capacity;
    let prefix = lab.dir.join(format!("{name}-prefix"));
    let prefix = path_str(&prefix)?;
    let error_log = lab.log_path(&format!("{name}-error"));
    Ok(format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {error_log} warn;
worker_rlimit_nofile {open_files};
events {{ worker_connections {max_connections}; }}
"#,
        error_log = path_str(&error_log)?,
    ))
}

fn temp_paths(lab: &Lab, name: &str) -> Result<String> {
    let prefix = lab.dir.join(format!("{name}-prefix"));
    let prefix = path_str(&prefix)?;
    Ok(format!(
        "    client_body_temp_path {prefix}/body;\n    proxy_temp_path {prefix}/proxy;\n    \
         fastcgi_temp_path {prefix}/fastcgi;\n    uwsgi_temp_path {prefix}/uwsgi;\n    \
         scgi_temp_path {prefix}/scgi;\n"
    ))
}

/// The upstream: a fixed small 200 from memory, so that it is never what
/// limits either proxy. One worker, shared by both proxies' pools.
fn upstream_config(lab: &Lab, capacity: Capacity) -> Result<String> {
    Ok(format!(
        r#"{main}http {{
{temp}    access_log off;
    server {{
        listen {upstream} backlog=4096;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
        location / {{
            default_type text/plain;
            return 200 "ok\n";
        }}
    }}
}}
"#,
        main = nginx_main(
            lab,
            "upstream",
            Capacity {
                workers: 1,
                max_connections: 4096,
                ..capacity
            }
        )?,
        temp = temp_paths(lab, "upstream")?,
        upstream = lab::UPSTREAM,
    ))
}

/// befund-proxy's configuration: the WAN filter on the gateway's interface
/// with both proxies' addresses open on 443, the TLS listener and the
/// upstream.
fn ours_config(lab: &Lab, pki: &Pki, capacity: Capacity) -> Result<String> {
    Ok(format!(
        r#"# befund-proxy under load (cargo xtask bench proxy).
[firewall]
interface = "{wan}"
proxy_addresses = ["{ours}", "{nginx}"]
proxy_port = 443
pin_root = "{pin_root}"
state_file = "{state}"

[tls]
listen = ["{ours}:443"]
server_name = "{name}"
certificate = "{server_chain}"
private_key = "{server_key}"
client_ca = "{ca}"
crls = ["{crl}"]

[upstream]
url = "http://{upstream}"
pool_max_idle = {pool}

[identity]
secret_file = "{secret}"

[limits]
max_connections = {max_connections}
idle_timeout = "{IDLE_TIMEOUT_SECONDS}s"

[log]
audit = "{audit}"

[runtime]
pid_file = "{pid_file}"
workers = {workers}
"#,
        wan = lab::WAN_INTERFACE,
        ours = lab::OURS_ADDR,
        nginx = lab::NGINX_ADDR,
        pin_root = path_str(&lab.pin_root)?,
        state = path_str(&lab.dir.join("firewall.json"))?,
        name = SERVER_NAME,
        server_chain = path_str(&pki.server_chain)?,
        server_key = path_str(&pki.server_key)?,
        ca = path_str(&pki.ca_cert)?,
        crl = path_str(&pki.crl)?,
        upstream = lab::UPSTREAM,
        pool = UPSTREAM_POOL,
        secret = path_str(&pki.secret_file)?,
        audit = path_str(&Proxy::Ours.audit_log(lab))?,
        pid_file = path_str(&lab.dir.join("befund-proxy.pid"))?,
        max_connections = capacity.max_connections,
        workers = capacity.workers,
    ))
}

/// nginx as the same mTLS proxy: same certificates, CRL, suites, no
/// resumption, same identity headers and secret, same pool, same limits
/// where nginx has them, one JSON audit line per request to a file.
fn nginx_config(lab: &Lab, pki: &Pki, capacity: Capacity) -> Result<String> {
    let workers = capacity.workers;
    Ok(format!(
        r#"{main}http {{
{temp}    access_log off;
    log_format audit escape=json '{{"time":"$time_iso8601","client":"$remote_addr:$remote_port",'
        '"subject":"$ssl_client_s_dn","serial":"$ssl_client_serial",'
        '"fingerprint":"$ssl_client_fingerprint","method":"$request_method","path":"$uri",'
        '"version":"$server_protocol","status":$status,"bytes":$body_bytes_sent,'
        '"duration_ms":"$request_time","upstream_ms":"$upstream_response_time"}}';

    upstream befundserver {{
        server {upstream};
        keepalive {pool};
        keepalive_requests 100000000;
        keepalive_timeout 90s;
    }}

    server {{
        listen {addr}:443 ssl http2 backlog=1024;
        server_name {name};

        ssl_certificate {server_chain};
        ssl_certificate_key {server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {tls12};
        ssl_conf_command Ciphersuites {tls13};
        ssl_prefer_server_ciphers on;
        ssl_client_certificate {ca};
        ssl_crl {crl};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_session_cache off;
        ssl_session_tickets off;

        client_header_timeout 10s;
        keepalive_timeout {IDLE_TIMEOUT_SECONDS}s;
        keepalive_requests 100000000;
        large_client_header_buffers 4 16k;
        http2_max_concurrent_streams 100;

        access_log {audit} audit;

        location / {{
            proxy_pass http://befundserver;
            proxy_http_version 1.1;
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
            proxy_set_header Host {upstream};
            proxy_set_header Connection "";
            proxy_set_header Client-Cert $ssl_client_escaped_cert;
            proxy_set_header Client-Cert-Chain "";
            proxy_set_header X-Client-Cert-Subject $ssl_client_s_dn;
            proxy_set_header X-Client-Cert-Issuer $ssl_client_i_dn;
            proxy_set_header X-Client-Cert-Serial $ssl_client_serial;
            proxy_set_header X-Client-Cert-Fingerprint $ssl_client_fingerprint;
            proxy_set_header X-Client-Cert-Not-After $ssl_client_v_end;
            proxy_set_header X-Forwarded-Client-Cert "";
            proxy_set_header Forwarded "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Befund-Proxy-Auth "{secret}";
        }}
    }}
}}
"#,
        // Each worker may end up with all connections (accepts are not
        // spread evenly), so worker_connections is the whole limit.
        main = nginx_main(lab, "nginx", capacity)?,
        temp = temp_paths(lab, "nginx")?,
        upstream = lab::UPSTREAM,
        pool = (UPSTREAM_POOL / workers as u32).max(1),
        addr = lab::NGINX_ADDR,
        name = SERVER_NAME,
        server_chain = path_str(&pki.server_chain)?,
        server_key = path_str(&pki.server_key)?,
        tls12 = TLS12_CIPHERS,
        tls13 = TLS13_SUITES,
        ca = path_str(&pki.ca_cert)?,
        crl = path_str(&pki.crl)?,
        audit = path_str(&Proxy::Nginx.audit_log(lab))?,
        secret = pki.secret,
    ))
}
