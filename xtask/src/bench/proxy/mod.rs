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
//! neither side always runs first.
//!
//! It is a measurement: figures below the goals are reported, not failed.
//! It fails when a request fails (TLS error, timeout, status other than
//! 2xx) or a server dies. Everything it started or created is removed at the
//! end, after an error and on Ctrl-C too.

mod cpu;
mod interrupt;
mod lab;
mod load;
mod pki;
mod preflight;
mod report;
mod servers;
mod tools;

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use self::{
    lab::Lab,
    load::{Load, Scenario},
    report::{Machine, Run},
    servers::Proxy,
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
    /// A smoke run for CI: 3 s per run, one round, 1 s warm-up.
    #[arg(long)]
    quick: bool,
    /// Measure this befund-proxy binary instead of building one, e.g. a
    /// saved earlier build, to compare two builds against the same nginx.
    #[arg(long, value_name = "FILE")]
    proxy_bin: Option<PathBuf>,
}

/// What to run, after `--quick` is applied.
struct Plan {
    load: Load,
    rounds: usize,
    warm_up: Load,
}

impl Plan {
    fn new(options: &Options) -> Self {
        let (seconds, rounds, warm_up) = if options.quick {
            (3, 1, 1)
        } else {
            (options.seconds, options.rounds as usize, 3)
        };
        let load = Load {
            seconds,
            connections: options.connections,
        };
        Self {
            load,
            rounds,
            warm_up: Load {
                seconds: warm_up,
                ..load
            },
        }
    }
}

/// Paths of the release binaries.
struct Binaries {
    befund_proxy: PathBuf,
    befundctl: PathBuf,
}

pub fn run(options: &Options) -> Result<()> {
    let plan = Plan::new(options);
    if output(Command::new("id").arg("-u")).map(|uid| uid.trim() != "0")? {
        bail!("the proxy bench needs root (network namespaces, XDP); run it as root");
    }
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
    let runs = result?;

    println!("\n{}", report::render(&runs));
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
    let dir = root.join("target/release");
    Ok(Binaries {
        befund_proxy: dir.join("befund-proxy"),
        befundctl: dir.join("befundctl"),
    })
}

fn print_header(machine: &Machine, tools: &Tools, plan: &Plan, binaries: &Binaries) {
    println!(
        "befund-proxy vs nginx, {}: {} CPUs ({}), kernel {}, load average {} at the start",
        machine.date, machine.cpus, machine.cpu_model, machine.kernel, machine.load_at_start
    );
    println!(
        "{}; {}; {} with {} runtime threads, nginx with {} workers",
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
}

fn measure(
    lab: &mut Lab,
    binaries: &Binaries,
    tools: &Tools,
    plan: &Plan,
    workers: usize,
) -> Result<Vec<Run>> {
    let pki = pki::Pki::issue(&binaries.befundctl, &lab.dir)?;
    servers::start_all(lab, &pki, &binaries.befund_proxy, workers)?;
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
    Ok(runs)
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
    use super::*;

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
