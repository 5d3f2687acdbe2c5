//! `cargo xtask bench proxy`: befund-proxy against nginx as the same mTLS
//! proxy, side by side in one run.
//!
//! The bench builds befund-proxy in release mode, installs nginx and the load
//! generator, builds a client and a gateway namespace joined by a veth pair
//! (with the WAN filter on the gateway's side, as deployed), issues the
//! certificates with befundctl, starts a shared upstream, befund-proxy and
//! nginx in the gateway namespace, checks that both demand the client
//! certificate, and then drives both with the same tool and parameters:
//! requests on kept-alive connections, and a new TLS handshake with client
//! certificate for every request. The order alternates between rounds so
//! neither side always runs first. Before the load, each proxy in turn is
//! made to hold many idle mTLS connections while the bench reads its memory.
//!
//! It is a measurement: figures below the goals are reported, not failed.
//! It fails when a request or connection fails (TLS error, timeout, status
//! other than 2xx, an idle connection closed early) or a server dies. Everything it started or created is removed at the
//! end, after an error and on Ctrl-C too.

mod cpu;
mod idle;
mod interrupt;
mod lab;
mod load;
mod memory;
mod pki;
mod preflight;
mod processes;
mod report;
mod servers;
mod tools;

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use self::{
    idle::{IdleDriver, IdleOutcome},
    lab::Lab,
    load::{Load, Scenario},
    report::{Machine, Run},
    servers::{Capacity, Proxy},
    tools::Tools,
};
use crate::command::{self, output, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Rounds; each measures both scenarios on both proxies, the order
    /// alternating from round to round.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    rounds: u32,
    /// Idle mTLS connections each proxy holds while its memory is read
    /// [default: 10000; 500 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    idle_connections: Option<u32>,
    /// Hold the idle connections with HTTP/2, as browsers negotiate it,
    /// instead of HTTP/1.1.
    #[arg(long)]
    idle_http2: bool,
    /// Keep-alive requests per second (all connections together) instead
    /// of as many as each proxy answers: compares the proxies' CPU time per
    /// request at the same load, which other load on the machine disturbs
    /// less. The handshake scenario is unaffected.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: Option<u32>,
    /// A smoke run for CI: 3 s per run, one round, 1 s warm-up, 500 idle
    /// connections.
    #[arg(long)]
    quick: bool,
    /// Measure this befund-proxy binary instead of building one, e.g. a
    /// saved earlier build, to compare two builds against the same nginx.
    #[arg(long, value_name = "FILE")]
    proxy_bin: Option<PathBuf>,
}

/// Idle connections per proxy by default: the number the memory goal is
/// stated for.
const IDLE_CONNECTIONS: u32 = report::IDLE_GOAL_CONNECTIONS;
/// Idle connections per proxy with `--quick`.
const QUICK_IDLE_CONNECTIONS: u32 = 500;

/// What to run, after `--quick` is applied.
struct Plan {
    load: Load,
    rounds: usize,
    warm_up: Load,
    idle_connections: u32,
    idle_http2: bool,
}

impl Plan {
    fn new(options: &Options) -> Self {
        let (seconds, rounds, warm_up) = if options.quick {
            (3, 1, 1)
        } else {
            (options.seconds, options.rounds as usize, 3)
        };
        let idle_connections = options.idle_connections.unwrap_or(if options.quick {
            QUICK_IDLE_CONNECTIONS
        } else {
            IDLE_CONNECTIONS
        });
        let load = Load {
            seconds,
            connections: options.connections,
            rate: options.rate,
        };
        Self {
            load,
            rounds,
            warm_up: Load {
                seconds: warm_up,
                ..load
            },
            idle_connections,
            idle_http2: options.idle_http2,
        }
    }
}

/// Paths of the release binaries.
struct Binaries {
    befund_proxy: PathBuf,
    befundctl: PathBuf,
    idle_clients: PathBuf,
}

pub fn run(options: &Options) -> Result<()> {
    let plan = Plan::new(options);
    if output(Command::new("id").arg("-u")).map(|uid| uid.trim() != "0")? {
        bail!("the proxy bench needs root (network namespaces, XDP); run it as root");
    }
    check_open_files(plan.idle_connections, open_file_hard_limit()?)?;
    crate::setup::run()?;
    let tools = tools::install()?;
    let mut binaries = build()?;
    if let Some(bin) = &options.proxy_bin {
        if !bin.is_file() {
            bail!(
                "{} is not a file; give a befund-proxy binary",
                bin.display()
            );
        }
        binaries.befund_proxy = bin.clone();
    }
    interrupt::install()?;

    let machine = Machine::describe();
    print_header(&machine, &tools, &plan, &binaries);
    let mut lab = Lab::create()?;
    let result = measure(&mut lab, &binaries, &tools, &plan, machine.cpus);
    // After a failure the logs help; after Ctrl-C nobody asked for them.
    if result.is_err() && !interrupt::interrupted() {
        lab.keep_dir();
    }
    drop(lab);
    let (idle, runs) = result?;

    println!("\n{}", report::render(&runs));
    println!("{}", report::render_idle(&idle[0], &idle[1]));
    println!(
        "load average (1 min): {} at the start, {} at the end",
        machine.load_at_start,
        report::load_average()
    );
    Ok(())
}

fn build() -> Result<Binaries> {
    let root = workspace_root();
    command::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "befund-proxy",
        "--bins",
    ]))?;
    command::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "befund-tests",
        "--bin",
        "idle-clients",
    ]))?;
    let dir = root.join("target/release");
    Ok(Binaries {
        befund_proxy: dir.join("befund-proxy"),
        befundctl: dir.join("befundctl"),
        idle_clients: dir.join("idle-clients"),
    })
}

fn print_header(machine: &Machine, tools: &Tools, plan: &Plan, binaries: &Binaries) {
    println!(
        "befund-proxy vs nginx, {}: {} CPUs ({}), kernel {}, load average {} at the start",
        machine.date, machine.cpus, machine.cpu_model, machine.kernel, machine.load_at_start
    );
    println!(
        "{}; {}; {} with {} connection workers, nginx with {} workers",
        tools.oha_version,
        tools.nginx_version,
        binaries.befund_proxy.display(),
        machine.cpus,
        machine.cpus
    );
    println!(
        "certificates: CA {}, server {}, client {}; no session resumption on either side",
        pki::CA_KEY,
        pki::SERVER_KEY,
        pki::CLIENT_KEY
    );
    println!(
        "{} connections, {} s per run, {} round(s), order alternating; the load generator, \
         both proxies and the upstream share the machine's CPUs",
        plan.load.connections, plan.load.seconds, plan.rounds
    );
    if let Some(rate) = plan.load.rate {
        println!(
            "keep-alive at a fixed {rate} requests/s: compare CPU µs/req; req/s shows only \
             whether a proxy kept up"
        );
    }
    println!(
        "idle scenario: {} mTLS connections ({}) held by each proxy in turn, befund-proxy first",
        plan.idle_connections,
        if plan.idle_http2 {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        }
    );
}

fn measure(
    lab: &mut Lab,
    binaries: &Binaries,
    tools: &Tools,
    plan: &Plan,
    workers: usize,
) -> Result<([IdleOutcome; 2], Vec<Run>)> {
    let pki = pki::Pki::issue(&binaries.befundctl, &lab.dir)?;
    let capacity = Capacity {
        workers,
        max_connections: plan.idle_connections + servers::CONNECTION_MARGIN,
        open_files: open_file_hard_limit()?,
    };
    servers::start_all(lab, &pki, &binaries.befund_proxy, capacity)?;
    preflight::check(lab, &pki)?;

    // Memory first, while both proxies have served only the checks: the
    // baselines are then those of a freshly started proxy.
    let idle_driver = IdleDriver {
        client: &binaries.idle_clients,
        pki: &pki,
        http2: plan.idle_http2,
    };
    let idle = [
        idle_driver.run(lab, Proxy::Ours, plan.idle_connections)?,
        idle_driver.run(lab, Proxy::Nginx, plan.idle_connections)?,
    ];
    // Both serve again once the idle connections are gone.
    preflight::check(lab, &pki)?;

    let driver = load::Driver {
        oha: &tools.oha,
        pki: &pki,
        ticks_per_second: cpu::ticks_per_second()?,
    };
    for proxy in Proxy::BOTH {
        driver.run(lab, proxy, Scenario::KeepAlive, plan.warm_up)?;
    }
    let mut runs = Vec::new();
    for round in 0..plan.rounds {
        for (i, scenario) in Scenario::BOTH.into_iter().enumerate() {
            for proxy in order(round + i) {
                let outcome = driver.run(lab, proxy, scenario, plan.load)?;
                lab.check_alive()?;
                runs.push(Run {
                    round: round + 1,
                    scenario,
                    proxy,
                    outcome,
                });
            }
        }
    }
    lab.check_alive()?;
    for proxy in Proxy::BOTH {
        eprintln!(
            "bench: {} wrote {} audit lines",
            proxy.name(),
            count_lines(&proxy.audit_log(lab))
        );
    }
    Ok((idle, runs))
}

/// Open files each process of the idle scenario (the client and both
/// proxies) needs besides one per idle connection: upstream connections,
/// listeners, the filter's maps, logs.
const SPARE_FILES: u64 = 512;

/// This process's hard limit on open files, which the client and both
/// proxies inherit. Raising it needs CAP_SYS_RESOURCE, which the bench
/// does not assume.
fn open_file_hard_limit() -> Result<u64> {
    Ok(processes::open_file_limit(std::process::id())?.1)
}

/// Fails unless `hard` allows `idle_connections` plus spare descriptors.
fn check_open_files(idle_connections: u32, hard: u64) -> Result<()> {
    let needed = u64::from(idle_connections) + SPARE_FILES;
    if hard < needed {
        bail!(
            "{idle_connections} idle connections need an open-file limit of at least {needed}, \
             but the hard limit here is {hard}; raise it (ulimit -Hn {needed}, as root with \
             CAP_SYS_RESOURCE) or pass a smaller --idle-connections"
        );
    }
    Ok(())
}

/// Which proxy goes first: alternates with every scenario and round.
fn order(turn: usize) -> [Proxy; 2] {
    if turn.is_multiple_of(2) {
        [Proxy::Ours, Proxy::Nginx]
    } else {
        [Proxy::Nginx, Proxy::Ours]
    }
}

fn count_lines(path: &std::path::Path) -> usize {
    use std::io::BufRead as _;

    std::fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).split(b'\n').count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn plan(args: &[&str]) -> Result<Plan, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Ok(Plan::new(&cli.options))
    }

    #[test]
    fn idle_connections_default_to_the_goal_and_to_500_when_quick() {
        assert_eq!(plan(&[]).unwrap().idle_connections, 10_000);
        assert_eq!(plan(&["--quick"]).unwrap().idle_connections, 500);
        let both = plan(&["--quick", "--idle-connections", "2000"]).unwrap();
        assert_eq!(both.idle_connections, 2000);
    }

    #[test]
    fn hard_open_file_limit_below_the_idle_connections_stops_the_bench_early() {
        assert!(check_open_files(10_000, 20_000).is_ok());
        let err = check_open_files(20_000, 20_000).unwrap_err().to_string();
        assert!(
            err.starts_with("20000 idle connections need an open-file limit of at least 20512"),
            "{err}"
        );
    }

    #[test]
    fn idle_connections_are_bounded() {
        assert!(plan(&["--idle-connections", "50000"]).is_ok());
        assert!(plan(&["--idle-connections", "50001"]).is_err());
        assert!(plan(&["--idle-connections", "0"]).is_err());
    }

    #[test]
    fn each_side_goes_first_equally_often_over_two_rounds() {
        let mut first = Vec::new();
        for round in 0..2 {
            for i in 0..Scenario::BOTH.len() {
                first.push(order(round + i)[0]);
            }
        }
        let ours = first.iter().filter(|p| **p == Proxy::Ours).count();
        assert_eq!(ours, first.len() / 2);
        // Within a round the two scenarios start with different sides.
        assert_ne!(first[0], first[1]);
    }
}
