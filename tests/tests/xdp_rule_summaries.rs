//! The summaries the WAN filter uses to skip lookups that cannot match: the
//! rule maps' entry counts in the settings, the allow-port bitmap and the
//! proxy addresses listed in the settings. Written by the daemon's own map
//! code ([`FilterMaps`]), they must always describe the maps exactly, and
//! the verdicts must follow every rule added or removed.
//!
//! Needs root (BPF and a private bpffs). Run with
//! `cargo test -p befund-tests -- --test-threads=1`.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result, ensure};
use befund_common::{
    ALLOW_PORT_WORDS, FilterSettings, MAX_PROXY_ADDRESSES, SLOT_DEFAULT_DROP, SLOT_PROXY,
    allow_port_bit,
};
use befund_proxy::firewall::{FilterMaps, Rule, set_proxy_addresses};
use befund_tests::{
    frames::{tcp, udp},
    wan_filter::{LoadedFilter, XDP_DROP, XDP_PASS, allow_rule, cidr},
};

const PROXY_V4: &str = "192.0.2.10";
const CLIENT_V4: &str = "203.0.113.5";
const CLIENT_V6: &str = "2001:db8:c::5";
const ADMIN_V4: &str = "198.51.100.20";
const OTHER_ADMIN_V4: &str = "198.51.100.150";
const GATEWAY_V4: &str = "192.0.2.1";

fn settings_with_proxy(proxy: &[&str]) -> FilterSettings {
    let mut settings = FilterSettings {
        proxy_port: 443,
        tcp_flow_timeout_secs: 60,
        udp_flow_timeout_secs: 30,
        ..FilterSettings::default()
    };
    let proxy: Vec<IpAddr> = proxy
        .iter()
        .map(|a| a.parse().expect("test address"))
        .collect();
    set_proxy_addresses(&mut settings, &proxy);
    settings
}

fn empty_filter(proxy: &[&str]) -> Result<LoadedFilter> {
    let mut filter = LoadedFilter::load()
        .context("loading the WAN filter needs root; run the privileged tests as root")?;
    filter.set_settings(settings_with_proxy(proxy))?;
    Ok(filter)
}

/// The action on `frame` and the one counter slot that moved.
fn verdict(filter: &mut LoadedFilter, frame: &[u8]) -> Result<(u32, u32)> {
    let before = filter.counters()?;
    let action = filter.ingress(frame)?;
    let after = filter.counters()?;
    let moved: Vec<u32> = (0..)
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a.packets != b.packets)
        .map(|(slot, _)| slot)
        .collect();
    ensure!(moved.len() == 1, "slots {moved:?} moved for one frame");
    Ok((action, moved[0]))
}

/// Checks that the settings' counts and the allow-port bitmap describe the
/// rule maps exactly.
fn check_summary(maps: &FilterMaps, step: &str) -> Result<()> {
    let rules = maps.rules();
    let count =
        |f: fn(&Rule) -> bool| u32::try_from(rules.keys().filter(|r| f(r)).count()).expect("fits");
    let expected = (
        count(|r| matches!(r, Rule::Protect { .. })),
        count(|r| matches!(r, Rule::Block { .. })),
        count(|r| matches!(r, Rule::Allow(_))),
    );
    let s = maps.settings()?;
    let counted = (s.protected_entries, s.blocked_entries, s.allow_entries);
    ensure!(
        counted == expected,
        "after {step}: settings count (protected, blocked, allow) {counted:?}, the maps hold \
         {expected:?}"
    );

    let mut bits = vec![0u64; ALLOW_PORT_WORDS];
    for rule in rules.keys() {
        if let Rule::Allow(a) = rule {
            let (word, mask) =
                allow_port_bit(a.protocol.number(), a.port.get()).context("tcp or udp")?;
            bits[word] |= mask;
        }
    }
    ensure!(
        maps.allow_ports()?[..] == bits[..],
        "after {step}: the allow-port bitmap does not match the allow rules"
    );
    ensure!(
        s.proxy_port == 443 && s.proxy_ipv4_count == 1,
        "after {step}: the other settings changed"
    );
    Ok(())
}

#[test]
fn counts_and_port_bitmap_match_the_maps_after_adds_and_removes() -> Result<()> {
    let filter = empty_filter(&[PROXY_V4])?;
    let mut maps = filter.maps()?;
    check_summary(&maps, "start")?;

    let protect = Rule::Protect {
        destination: cidr("192.0.2.50")?,
    };
    let block = Rule::Block {
        source: cidr("2001:db8:ad::/48")?,
    };
    let ssh_admin = allow_rule(6, 22, "198.51.100.0/25")?;
    let ssh_other = allow_rule(6, 22, "198.51.100.128/25")?;
    let dns = allow_rule(17, 53, "0.0.0.0/0")?;
    let high = allow_rule(17, 65535, "2001:db8::/32")?;

    let mut steps: Vec<(&str, bool, Rule)> = vec![
        ("add protect", true, protect),
        ("add protect again", true, protect),
        ("add block", true, block),
        ("add ssh admin", true, ssh_admin),
        ("add ssh other", true, ssh_other),
        ("add dns", true, dns),
        ("add high port", true, high),
        ("remove ssh admin", false, ssh_admin),
        ("remove ssh admin again", false, ssh_admin),
        ("remove dns", false, dns),
        ("remove protect", false, protect),
        ("add protect back", true, protect),
    ];
    steps.extend([
        ("remove ssh other", false, ssh_other),
        ("remove high port", false, high),
        ("remove block", false, block),
        ("remove protect last", false, protect),
    ]);
    for (step, add, rule) in steps {
        if add {
            maps.insert_rule(&rule, 16)?;
        } else {
            maps.remove_rule(&rule)?;
        }
        check_summary(&maps, step)?;
    }
    ensure!(maps.rules().is_empty(), "rules left over");

    // A start or reload makes the maps hold exactly a rule set.
    let wanted: BTreeMap<Rule, u32> = [(protect, 16), (ssh_admin, 17), (dns, 18)].into();
    maps.sync_rules(&wanted)?;
    check_summary(&maps, "sync to three rules")?;
    let wanted: BTreeMap<Rule, u32> = [(block, 19), (ssh_other, 20)].into();
    maps.sync_rules(&wanted)?;
    check_summary(&maps, "sync to two other rules")?;
    maps.sync_rules(&BTreeMap::new())?;
    check_summary(&maps, "sync to no rules")?;

    // Rewriting the settings keeps the counts of the maps.
    maps.insert_rule(&protect, 16)?;
    maps.set_settings(&settings_with_proxy(&[PROXY_V4]))?;
    check_summary(&maps, "settings rewritten")
}

#[test]
fn verdicts_follow_rules_added_to_and_removed_from_empty_maps() -> Result<()> {
    let mut filter = empty_filter(&[PROXY_V4])?;
    let to_proxy = tcp(CLIENT_V4, 40000, PROXY_V4, 443).build();
    let ssh = tcp(ADMIN_V4, 40000, GATEWAY_V4, 22).build();
    let ssh_other = tcp(OTHER_ADMIN_V4, 40000, GATEWAY_V4, 22).build();

    // Every count 0: nothing is looked up, and nothing is wrongly admitted.
    ensure!(verdict(&mut filter, &to_proxy)? == (XDP_PASS, SLOT_PROXY));
    ensure!(verdict(&mut filter, &ssh)? == (XDP_DROP, SLOT_DEFAULT_DROP));
    // The unused proxy address places hold zeros, which match nothing.
    for (src, dst) in [(CLIENT_V4, "0.0.0.0"), (CLIENT_V6, "::")] {
        let frame = tcp(src, 40000, dst, 443).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_DROP, SLOT_DEFAULT_DROP),
            "{dst}"
        );
    }

    let protect = Rule::Protect {
        destination: cidr(PROXY_V4)?,
    };
    filter.insert_rule(protect, 16)?;
    ensure!(
        verdict(&mut filter, &to_proxy)? == (XDP_DROP, 16),
        "a protected address is reached once its map is not empty"
    );
    filter.remove_rule(protect)?;
    ensure!(verdict(&mut filter, &to_proxy)? == (XDP_PASS, SLOT_PROXY));

    let block = Rule::Block {
        source: cidr("203.0.113.0/24")?,
    };
    filter.insert_rule(block, 17)?;
    ensure!(verdict(&mut filter, &to_proxy)? == (XDP_DROP, 17));
    filter.remove_rule(block)?;
    ensure!(verdict(&mut filter, &to_proxy)? == (XDP_PASS, SLOT_PROXY));

    let admin = allow_rule(6, 22, "198.51.100.0/25")?;
    let other = allow_rule(6, 22, "198.51.100.128/25")?;
    filter.insert_rule(admin, 18)?;
    ensure!(verdict(&mut filter, &ssh)? == (XDP_PASS, 18));
    ensure!(
        verdict(&mut filter, &ssh_other)? == (XDP_DROP, SLOT_DEFAULT_DROP),
        "the port has a rule, but not for this source"
    );
    filter.insert_rule(other, 19)?;
    filter.remove_rule(admin)?;
    ensure!(
        verdict(&mut filter, &ssh)? == (XDP_DROP, SLOT_DEFAULT_DROP),
        "a removed rule still admits while another rule keeps its port"
    );
    ensure!(verdict(&mut filter, &ssh_other)? == (XDP_PASS, 19));
    filter.remove_rule(other)?;
    ensure!(verdict(&mut filter, &ssh_other)? == (XDP_DROP, SLOT_DEFAULT_DROP));
    Ok(())
}

#[test]
fn each_of_the_most_proxy_addresses_admits_the_proxy_port_and_no_other_does() -> Result<()> {
    let v4 = ["192.0.2.10", "192.0.2.11", "198.51.100.1", "203.0.113.200"];
    let v6 = [
        "2001:db8:1::10",
        "2001:db8:1::11",
        "2001:db8:2::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe",
    ];
    ensure!(v4.len() == MAX_PROXY_ADDRESSES && v6.len() == MAX_PROXY_ADDRESSES);
    let all: Vec<&str> = v4.iter().chain(&v6).copied().collect();
    let mut filter = empty_filter(&all)?;
    let s = filter.settings()?;
    ensure!(
        usize::from(s.proxy_ipv4_count) == MAX_PROXY_ADDRESSES
            && usize::from(s.proxy_ipv6_count) == MAX_PROXY_ADDRESSES
    );

    for addr in v4 {
        let frame = tcp(CLIENT_V4, 40000, addr, 443).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_PASS, SLOT_PROXY),
            "{addr}"
        );
        let mapped = format!("::ffff:{addr}");
        let frame = tcp(CLIENT_V6, 40000, &mapped, 443).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_PASS, SLOT_PROXY),
            "{mapped}"
        );
        let frame = tcp(CLIENT_V4, 40000, addr, 444).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_DROP, SLOT_DEFAULT_DROP),
            "{addr} port 444"
        );
    }
    for addr in v6 {
        let frame = tcp(CLIENT_V6, 40000, addr, 443).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_PASS, SLOT_PROXY),
            "{addr}"
        );
        let frame = udp(CLIENT_V6, 40000, addr, 443).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_DROP, SLOT_DEFAULT_DROP),
            "{addr} UDP"
        );
    }
    for other in [
        "192.0.2.12",
        "0.0.0.0",
        "2001:db8:1::12",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "::",
        "::ffff:192.0.2.12",
    ] {
        let src = if other.contains(':') {
            CLIENT_V6
        } else {
            CLIENT_V4
        };
        let frame = tcp(src, 40000, other, 443).build();
        ensure!(
            verdict(&mut filter, &frame)? == (XDP_DROP, SLOT_DEFAULT_DROP),
            "{other} is not a proxy address"
        );
    }
    Ok(())
}
