//! `cargo xtask bench`: measurements that are not pass/fail tests.

mod proxy;
mod xdp;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Options {
    #[command(subcommand)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum Target {
    /// Cost per packet of the XDP WAN filter's main paths, measured in the
    /// kernel with BPF_PROG_TEST_RUN (needs root), beside the 67 ns line-rate
    /// budget and the 30 ns goal.
    Xdp(xdp::Options),
    /// The mTLS proxy against nginx with the same certificates, TLS settings,
    /// identity headers, audit logging and upstream, driven by the same load
    /// tool through the WAN filter (needs root): requests per second and p99
    /// latency on keep-alive connections and with a new handshake per request,
    /// and memory while holding 10,000 idle mTLS connections.
    Proxy(proxy::Options),
}

pub fn run(options: Options) -> Result<()> {
    match options.target {
        Target::Xdp(options) => xdp::run(&options),
        Target::Proxy(options) => proxy::run(&options),
    }
}
