//! The demo scenario as a test: the whole system in three network
//! namespaces, the lab's access protocol run with real clients, every row
//! asserted. Needs root (BPF, namespaces), curl, openssl and nmap.

use befund_tests::{
    demo::{Deployment, Options, protocol, report},
    harness::profile_dir,
};

#[test]
fn access_protocol_in_namespaces_matches_the_lab_concept() {
    let options = Options {
        bin_dir: profile_dir().expect("the product's binaries"),
        tag: "e2e".to_owned(),
        gateway_env: Vec::new(),
        runtime_user: None,
    };
    let deployment = Deployment::start(&options).expect("deployment starts");
    let rows = protocol::run(&deployment).expect("protocol runs");
    let table = report::render(&rows);
    println!("{table}");

    assert_eq!(rows.len(), 13, "{table}");
    for row in &rows {
        assert!(row.passed(), "row `{}` deviates:\n{table}", row.test);
    }
    let by_test = |name: &str| {
        rows.iter()
            .find(|row| row.test == name)
            .unwrap_or_else(|| panic!("no row `{name}`"))
    };
    // The filter, not the kernel's missing route, stopped the direct attempt.
    let direct = by_test("direct TCP connect to the Befundserver");
    assert!(
        direct
            .counters
            .iter()
            .any(|(name, n)| name.starts_with("protect") && *n > 0),
        "{table}"
    );
    // The admitted login went through the proxy rule.
    let login = by_test("valid certificate and right password: report arrives");
    assert!(
        login.counters.iter().any(|(name, _)| name == "proxy"),
        "{table}"
    );
}
