//! The test bed of Befund Gateway: what the privileged integration tests,
//! the demo, the benchmarks and the VM test build around the product.
//!
//! - [`netns`]: network namespaces and the veth pairs that join them;
//! - [`bpffs`]: bpf filesystems for the WAN filter's pins;
//! - [`files`]: work directories and private files;
//! - [`process`]: processes started for a test, stopped when dropped;
//! - [`pki`]: the lab's CA and certificates, issued with `befundctl`;
//! - [`command`]: running the tools all of this is made with.
//!
//! Every guard removes what it created when it is dropped, also when a test
//! fails or panics. Names that the kernel shares between processes carry
//! the process id (see [`unique_name`]), so parallel runs cannot collide.
//!
//! The crate needs no BPF toolchain: `cargo xtask` uses it before `cargo
//! xtask setup` has installed one.

pub mod bpffs;
pub mod command;
pub mod files;
pub mod netns;
pub mod pki;
pub mod process;

use std::sync::atomic::{AtomicU32, Ordering};

/// The longest name a network interface may have (`IFNAMSIZ` minus the
/// terminating zero).
pub const MAX_INTERFACE_NAME: usize = 15;

/// A name unique to this process and call: `<prefix><pid>x<n>`, short
/// enough to name a network interface as well as a namespace or directory.
///
/// # Panics
///
/// If the name would be longer than [`MAX_INTERFACE_NAME`]: the prefix is
/// too long.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);

    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(
        name.len() <= MAX_INTERFACE_NAME,
        "name {name} is too long for an interface; use a shorter prefix than {prefix:?}"
    );
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_name_carries_prefix_and_process_id() {
        let name = unique_name("va");
        let rest = name.strip_prefix("va").unwrap();
        let (pid, _) = rest.split_once('x').unwrap();
        assert_eq!(pid, std::process::id().to_string());
    }

    #[test]
    fn unique_names_differ_between_calls() {
        let names: std::collections::HashSet<String> = (0..100).map(|_| unique_name("t")).collect();
        assert_eq!(names.len(), 100);
    }

    #[test]
    fn unique_names_fit_an_interface_name() {
        assert!(unique_name("fwg").len() <= MAX_INTERFACE_NAME);
    }

    #[test]
    #[should_panic(expected = "too long for an interface")]
    fn unique_name_with_a_long_prefix_panics() {
        unique_name("a-prefix-far-too-long");
    }
}
