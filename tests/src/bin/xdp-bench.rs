//! Cost per packet of the WAN filter's main paths, measured by the kernel.
//!
//! Loads the real filter object, fills its maps with a rule set of realistic
//! size, and runs one frame per path through `BPF_PROG_TEST_RUN` with a large
//! repeat count; the kernel reports the mean time per run. Needs root.
//!
//! Run through `cargo xtask bench xdp`.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, ensure};
use befund_common::{FilterSettings, LOCAL_GATEWAY};
use befund_proxy::firewall::{Rule, set_proxy_addresses};
use befund_tests::{
    frames::{Vlan, arp_request, tcp, with_ipv6_destination_options},
    wan_filter::{LoadedFilter, XDP_DROP, XDP_PASS, allow_rule, cidr},
};
use clap::Parser;

/// 10 GbE line rate with 64-byte frames (84 bytes on the wire with preamble
/// and inter-frame gap) is 14.88 million frames per second on one core:
/// 67 ns per frame.
const BUDGET_NS: f64 = 67.0;
/// Room for the rest of the receive path on the same core.
const GOAL_NS: f64 = 30.0;

const PROXY_V4: &str = "192.0.2.10";
const PROXY_V6: &str = "2001:db8:1::10";
const GATEWAY_V4: &str = "192.0.2.1";
const ROUTER_V4: &str = "192.0.2.254";
const PROTECTED_V4: &str = "192.0.2.50";
const ADMIN_V4: &str = "198.51.100.20";
const CLIENT_V4: &str = "203.0.113.5";
const CLIENT_V6: &str = "2001:db8:c::5";

#[derive(Parser)]
#[command(about = "Time the WAN filter's paths with BPF_PROG_TEST_RUN")]
struct Args {
    /// Runs per measurement; the kernel reports their mean.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per path; the median and the fastest are shown.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Extra rules of each kind loaded besides the ones the paths hit.
    #[arg(long, default_value_t = 256)]
    extra_rules: u32,
}

struct Path {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
}

fn paths() -> Vec<Path> {
    let path = |name, frame, action| Path {
        name,
        frame,
        action,
    };
    vec![
        path(
            "pass: ARP (floor: Ethernet, counter)",
            arp_request(
                ROUTER_V4.parse().expect("v4"),
                GATEWAY_V4.parse().expect("v4"),
            ),
            XDP_PASS,
        ),
        path(
            "pass: TCP 443 to proxy (IPv4)",
            tcp(CLIENT_V4, 40000, PROXY_V4, 443).build(),
            XDP_PASS,
        ),
        path(
            "pass: TCP 443 to proxy (IPv6)",
            tcp(CLIENT_V6, 40000, PROXY_V6, 443).build(),
            XDP_PASS,
        ),
        path(
            "pass: IPv6, 2 VLAN tags, 3 ext headers",
            with_ipv6_destination_options(
                tcp(CLIENT_V6, 40000, PROXY_V6, 443)
                    .vlan(Vlan::Double)
                    .build(),
                3,
            ),
            XDP_PASS,
        ),
        path(
            "pass: allow rule (admin TCP 22)",
            tcp(ADMIN_V4, 40000, GATEWAY_V4, 22).build(),
            XDP_PASS,
        ),
        path(
            "drop: protected address",
            tcp(CLIENT_V4, 40000, PROTECTED_V4, 443).build(),
            XDP_DROP,
        ),
        path(
            "drop: default, SYN to a closed port",
            tcp(CLIENT_V4, 40000, GATEWAY_V4, 8080).build(),
            XDP_DROP,
        ),
        path(
            "drop: default, ACK to a closed port",
            tcp(CLIENT_V4, 40000, GATEWAY_V4, 8080).ack().build(),
            XDP_DROP,
        ),
    ]
}

/// A rule set of the size a lab deploys: some protected hosts, a blocklist
/// and a handful of admin rules, on top of the ones the paths hit.
fn configure(filter: &mut LoadedFilter, extra_rules: u32) -> Result<()> {
    let mut settings = FilterSettings {
        proxy_port: 443,
        tcp_flow_timeout_secs: 120,
        udp_flow_timeout_secs: 30,
        ..FilterSettings::default()
    };
    set_proxy_addresses(&mut settings, &[PROXY_V4.parse()?, PROXY_V6.parse()?]);
    filter.set_settings(settings)?;
    for addr in [PROXY_V4, PROXY_V6, GATEWAY_V4] {
        filter.add_local(addr, LOCAL_GATEWAY)?;
    }

    let mut rules = BTreeMap::new();
    rules.insert(
        Rule::Protect {
            destination: cidr(PROTECTED_V4)?,
        },
        16,
    );
    rules.insert(allow_rule(6, 22, "198.51.100.0/24")?, 17);
    for i in 0..extra_rules {
        let (hi, lo) = (i / 256, i % 256);
        let protect = cidr(&format!("10.{hi}.{lo}.0/24"))?;
        rules.insert(
            Rule::Protect {
                destination: protect,
            },
            18,
        );
        rules.insert(
            allow_rule(6, 22, &format!("100.{}.{lo}.0/24", 64 + hi))?,
            19,
        );
        for (source, slot) in [
            (format!("198.{}.{lo}.16/28", 18 + hi), 20),
            (format!("2001:db8:dead:{i:x}::/64"), 21),
        ] {
            let source = cidr(&source)?;
            rules.insert(Rule::Block { source }, slot);
        }
    }
    filter
        .maps()?
        .sync_rules(&rules)
        .context("failed to write the rules")
}

/// Median and minimum of the samples, in nanoseconds. The minimum is the
/// run least disturbed by other load on the machine.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ns = |d: Duration| d.as_nanos() as f64;
    (ns(samples[samples.len() / 2]), ns(samples[0]))
}

fn mark(ns: f64, limit: f64) -> &'static str {
    if ns <= limit { "within" } else { "OVER" }
}

fn run(args: &Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.repeat > 0,
        "--rounds and --repeat must be positive"
    );
    let mut filter = LoadedFilter::load().context("loading the WAN filter needs root")?;
    configure(&mut filter, args.extra_rules)?;

    println!(
        "WAN filter cost per packet (BPF_PROG_TEST_RUN, {} runs x {} rounds; \
         median and fastest round; budget and goal judged on the median)",
        args.repeat, args.rounds
    );
    println!(
        "{:<42} {:>6} {:>7} {:>7}  {:>12}  {:>10}",
        "path", "bytes", "median", "min", "budget 67 ns", "goal 30 ns"
    );
    for path in paths() {
        let mut samples = Vec::with_capacity(args.rounds);
        for _ in 0..args.rounds {
            let (action, mean) = filter.time_ingress(&path.frame, args.repeat)?;
            ensure!(
                action == path.action,
                "{}: the filter returned {action}, expected {}",
                path.name,
                path.action
            );
            samples.push(mean);
        }
        let (median, min) = summary(samples);
        println!(
            "{:<42} {:>6} {:>7.0} {:>7.0}  {:>12}  {:>10}",
            path.name,
            path.frame.len(),
            median,
            min,
            mark(median, BUDGET_NS),
            mark(median, GOAL_NS)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
