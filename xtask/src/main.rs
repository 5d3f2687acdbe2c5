//! `cargo xtask`: everything around the code.
//!
//! Run `cargo xtask --help` for the list of tasks.

mod bench;
mod command;
mod demo;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and run Befund Gateway")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs (Debian packages, bpf-linker, the linked
    /// BPF toolchain). Idempotent; needs root for apt.
    Setup,
    /// Build everything and run the gateway, the reference Befundserver and
    /// the lab's access protocol in network namespaces.
    Demo(demo::Options),
    /// Run setup, fmt check, clippy, unit tests and the privileged tests.
    Test(test::Options),
    /// Measure performance (needs root), e.g. `cargo xtask bench xdp`.
    Bench(bench::Options),
}

fn main() {
    let Cli { task } = Cli::parse();
    let result = match task {
        Task::Setup => setup::run(),
        Task::Demo(options) => demo::run(options),
        Task::Test(options) => test::run(options),
        Task::Bench(options) => bench::run(options),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
