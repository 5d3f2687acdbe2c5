//! Dropping root privileges after binding: verified in a child process,
//! since the switch applies to the whole process and cannot be undone.

use std::process::Command;

use befund_proxy::privileges::drop_to_user;

const CHILD_ENV: &str = "BEFUND_PRIVILEGE_DROP_CHILD";
const TEST_NAME: &str = "dropping_privileges_switches_every_id_for_good";
const KEEP_TEST_NAME: &str = "keeping_cap_bpf_keeps_nothing_else";

/// `CAP_BPF` (39) as /proc/self/status prints a capability set.
const CAP_BPF_ONLY: &str = "0000008000000000";

/// The `Uid:`, `Gid:`, `Groups:` and capability lines of this thread's
/// status (capabilities are per thread; the test runs on its own thread).
fn kernel_view() -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap()
        .lines()
        .filter(|l| {
            [
                "Uid:", "Gid:", "Groups:", "CapPrm:", "CapEff:", "CapInh:", "CapAmb:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn child(keep_bpf: bool) {
    let running = drop_to_user("nobody", keep_bpf).unwrap();
    println!("KEPT {:?}", running.kept);
    println!("RUNNING_AS {} {}", running.uid, running.gid);
    println!("{}", kernel_view());
    let shadow = std::fs::read("/etc/shadow");
    println!(
        "SHADOW {}",
        if shadow.is_ok() { "readable" } else { "denied" }
    );
    println!(
        "SETUID_ROOT {}",
        if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
            "regained"
        } else {
            "refused"
        }
    );
}

#[test]
fn dropping_privileges_switches_every_id_for_good() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child(false);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: dropping privileges needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody exists");
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());

    let stdout = run_child(TEST_NAME);
    assert!(stdout.contains("KEPT []"), "{stdout}");
    assert!(stdout.contains("CapPrm: 0000000000000000"), "{stdout}");
    assert!(stdout.contains("CapEff: 0000000000000000"), "{stdout}");
    assert!(
        stdout.contains(&format!("RUNNING_AS {uid} {gid}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Uid: {uid} {uid} {uid} {uid}")),
        "real, effective, saved, fs uid: {stdout}"
    );
    assert!(
        stdout.contains(&format!("Gid: {gid} {gid} {gid} {gid}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Groups: {gid}\n")),
        "supplementary groups: {stdout}"
    );
    assert!(stdout.contains("SHADOW denied"), "{stdout}");
    assert!(stdout.contains("SETUID_ROOT refused"), "{stdout}");
}

fn run_child(test: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn keeping_cap_bpf_keeps_nothing_else() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child(true);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: dropping privileges needs root");
        return;
    }
    let stdout = run_child(KEEP_TEST_NAME);
    assert!(stdout.contains("KEPT [\"CAP_BPF\"]"), "{stdout}");
    assert!(
        stdout.contains(&format!("CapPrm: {CAP_BPF_ONLY}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("CapEff: {CAP_BPF_ONLY}")),
        "{stdout}"
    );
    assert!(stdout.contains("CapInh: 0000000000000000"), "{stdout}");
    assert!(stdout.contains("SHADOW denied"), "{stdout}");
    assert!(stdout.contains("SETUID_ROOT refused"), "{stdout}");
}

#[test]
fn dropping_to_an_unknown_user_fails_with_advice() {
    let error = drop_to_user("no-such-befund-user", false)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "cannot switch to user `no-such-befund-user`: no such user; create it (e.g. `useradd --system \
         no-such-befund-user`) or fix runtime.user"
    );
}

#[test]
fn dropping_to_root_is_refused() {
    let error = drop_to_user("root", false).unwrap_err().to_string();
    assert_eq!(
        error,
        "cannot switch to user `root`: it has uid 0; name an unprivileged user"
    );
}
