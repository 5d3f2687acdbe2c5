//! `cargo xtask`: everything around the code.
//!
//! Run `cargo xtask --help` for the list of tasks.

mod bench;
mod command;
mod demo;
mod image;
mod runlog;
mod setup;
mod test;
mod vm_test;

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
    /// Build the appliance's disk image (Debian 12, UEFI, qcow2) in
    /// target/image. Needs root.
    Image(image::Options),
    /// Boot the appliance image under QEMU between a client and a lab
    /// namespace and check it from both sides. Needs root.
    VmTest(vm_test::Options),
}

fn main() {
    let Cli { task } = Cli::parse();
    let result = match task {
        Task::Setup => setup::run(),
        Task::Demo(options) => demo::run(options),
        Task::Test(options) => test::run(options),
        Task::Bench(options) => bench::run(options),
        Task::Image(options) => image::run(&options),
        Task::VmTest(options) => vm_test::run(options),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
