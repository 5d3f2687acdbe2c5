//! `befund-demo`: runs the whole system in network namespaces and prints the
//! lab's access protocol. Started by `cargo xtask demo`.

use std::{path::PathBuf, process::ExitCode};

use befund_tests::demo::{Deployment, Options, SERVER_NAME, protocol, report, topology};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "befund-demo",
    about = "Run Befund Gateway in network namespaces and audit it"
)]
struct Cli {
    /// Directory holding befund-proxy, befundctl and befundserver.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Leave everything running after the protocol until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let Cli { bin_dir, keep } = Cli::parse();
    let options = Options {
        bin_dir,
        tag: "demo".to_owned(),
        gateway_env: Vec::new(),
        runtime_user: None,
    };
    match run(&options, keep) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("befund-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options, keep: bool) -> anyhow::Result<bool> {
    // Ctrl-C must still tear the namespaces down: the handler only sets a
    // flag, and the guards below run their Drop on the way out.
    let interrupted = interrupt_flag()?;
    eprintln!("starting: namespaces, CA and certificates, Befundserver, gateway with XDP filter");
    let mut deployment = Deployment::start(options)?;
    eprintln!("running the access protocol from the client namespace");
    let rows = protocol::run(&deployment)?;

    println!(
        "\nBefund Gateway: access protocol (gateway {SERVER_NAME} = {})\n",
        topology::GATEWAY_WAN
    );
    print!("{}", report::render(&rows));
    let passed = rows.iter().all(report::Row::passed);
    println!(
        "\n{}",
        if passed {
            "every row as expected"
        } else {
            "DEVIATION: at least one row differs from the lab's concept"
        }
    );

    if keep {
        print_try_it(&deployment);
        // A process that dies (or is killed to watch the filter fail
        // closed) is reported, but the deployment stays until Ctrl-C.
        let mut reported = false;
        while !interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            if let (Err(e), false) = (deployment.topology.check_alive(), reported) {
                eprintln!("\n{e:#}\nthe namespaces stay until Ctrl-C (the filter stays attached)");
                reported = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        eprintln!("\nremoving namespaces and processes");
    }
    if !passed {
        deployment.topology.keep_dir();
        eprintln!("kept for inspection: {}", deployment.topology.dir.display());
    }
    Ok(passed)
}

fn print_try_it(deployment: &Deployment) {
    let t = &deployment.topology;
    let p = &deployment.pki.physicians[0];
    println!(
        "\nThe deployment keeps running; Ctrl-C removes it. Try it by hand:\n\n  \
         ip netns exec {client} curl --resolve {SERVER_NAME}:443:{wan} --cacert {ca} \\\n      \
         --cert {cert} --key {key} \\\n      \
         --data-urlencode username={user} --data-urlencode password={password} \\\n      \
         -c {dir}/cookies https://{SERVER_NAME}/login\n  \
         ip netns exec {client} curl --resolve {SERVER_NAME}:443:{wan} --cacert {ca} \\\n      \
         --cert {cert} --key {key} -b {dir}/cookies https://{SERVER_NAME}/reports\n  \
         ip netns exec {gateway} {befundctl} fw status --config {config}\n\n\
         Logs: {dir}",
        client = t.client.name(),
        gateway = t.gateway.name(),
        befundctl = deployment.bin("befundctl").display(),
        wan = topology::GATEWAY_WAN,
        ca = deployment.pki.ca_cert.display(),
        cert = p.cert.display(),
        key = p.key.display(),
        user = p.account,
        password = p.password,
        config = deployment.gateway_config().display(),
        dir = t.dir.display(),
    );
}

fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    ctrlc::set_handler(move || set.store(true, std::sync::atomic::Ordering::Relaxed))?;
    Ok(flag)
}
