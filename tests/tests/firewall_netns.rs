//! The XDP WAN filter end to end: the real daemon attaches the real program
//! to a veth in a gateway namespace, and real TCP/UDP traffic (plus nmap for
//! raw packets) from a client namespace shows what passes.
//!
//! Needs root. Every test builds its own namespaces, veth and bpffs with
//! unique names and removes them when it ends, also on failure.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use befund_tests::{
    gateway::{
        BLOCKED_ADDR, CLIENT_ADDR, CLIENT_ADDR6, GATEWAY_ADDR, Gateway, Mode, PROTECTED_ADDR,
        PROXY_ADDR, PROXY_ADDR6, PROXY_PORT,
    },
    harness::eventually,
    traffic::{
        EchoServer, UdpEcho, can_talk, connect, connect_from, connect_within, nmap_syn_ack,
        round_trip, udp,
    },
};

fn at(addr: std::net::IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(addr, port)
}

// --- the proxy port passes, everything else is dropped ---------------------

fn proxy_port_passes_and_other_traffic_is_dropped(mode: Mode) -> Result<()> {
    let mut gw = Gateway::new(
        mode,
        "protected = [\"192.0.2.20\"]\nblocked = [\"192.0.2.200/32\"]",
    )?;
    let proxy = EchoServer::start(&gw.gw, at(PROXY_ADDR, PROXY_PORT))?;
    let proxy6 = EchoServer::start(&gw.gw, at(PROXY_ADDR6, PROXY_PORT))?;
    let other_port = EchoServer::start(&gw.gw, at(PROXY_ADDR, 8080))?;
    let other_port6 = EchoServer::start(&gw.gw, at(PROXY_ADDR6, 8080))?;
    let protected = EchoServer::start(&gw.gw, at(PROTECTED_ADDR, PROXY_PORT))?;
    let own = EchoServer::start(&gw.gw, at(GATEWAY_ADDR, PROXY_PORT))?;

    // Without the filter every one of these answers, so a failure below is
    // the filter's doing.
    for target in [
        at(PROXY_ADDR, 8080),
        at(PROXY_ADDR6, 8080),
        at(PROTECTED_ADDR, PROXY_PORT),
        at(GATEWAY_ADDR, PROXY_PORT),
    ] {
        can_talk(&gw.client, None, target).context("before the filter")?;
    }
    can_talk(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT))
        .context("before the filter")?;
    let before = (
        other_port.accepted() + other_port6.accepted(),
        protected.accepted(),
        own.accepted(),
    );

    let attached = gw.start_daemon()?;
    ensure!(
        attached.contains("Attached"),
        "fresh attach expected: {attached}"
    );
    ensure!(
        gw.wan_link()?.contains(mode.ip_link_keyword()),
        "ip link shows no {mode:?} XDP program:\n{}",
        gw.wan_link()?
    );

    can_talk(&gw.client, None, at(PROXY_ADDR, PROXY_PORT)).context("to the proxy port")?;
    ensure!(proxy.accepted() >= 1);
    // IPv6 needs neighbour discovery through the filter first.
    gw.client.ip(&["neigh", "flush", "all"])?;
    can_talk(&gw.client, Some(CLIENT_ADDR6), at(PROXY_ADDR6, PROXY_PORT))
        .context("to the proxy port over IPv6")?;
    ensure!(proxy6.accepted() >= 1);

    for target in [
        at(PROXY_ADDR, 8080),
        at(PROXY_ADDR6, 8080),
        at(PROTECTED_ADDR, PROXY_PORT),
        at(GATEWAY_ADDR, PROXY_PORT),
    ] {
        ensure!(
            connect(&gw.client, None, target).is_err(),
            "a connection to {target} got through the filter"
        );
    }
    ensure!(
        connect(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT)).is_err(),
        "a connection from the blocked source got through"
    );
    ensure!(
        (
            other_port.accepted() + other_port6.accepted(),
            protected.accepted(),
            own.accepted()
        ) == before,
        "a listener behind the filter accepted a connection"
    );

    let counters = gw.counters()?;
    ensure!(
        counters["proxy"] > 0,
        "proxy verdicts not counted: {counters:?}"
    );
    ensure!(
        counters["default_drop"] > 0,
        "default drops not counted: {counters:?}"
    );
    ensure!(
        counters["protect 192.0.2.20/32"] > 0,
        "protected drops not counted: {counters:?}"
    );
    ensure!(
        counters["block 192.0.2.200/32"] > 0,
        "blocked drops not counted: {counters:?}"
    );
    Ok(())
}

#[test]
fn proxy_port_passes_and_other_traffic_is_dropped_native() -> Result<()> {
    proxy_port_passes_and_other_traffic_is_dropped(Mode::Native)
}

#[test]
fn proxy_port_passes_and_other_traffic_is_dropped_skb() -> Result<()> {
    proxy_port_passes_and_other_traffic_is_dropped(Mode::Skb)
}

// --- ARP ---------------------------------------------------------------------

fn neighbours_resolve_again_after_the_cache_is_flushed(mode: Mode) -> Result<()> {
    let mut gw = Gateway::new(mode, "")?;
    let _proxy = EchoServer::start(&gw.gw, at(PROXY_ADDR, PROXY_PORT))?;
    gw.start_daemon()?;
    can_talk(&gw.client, None, at(PROXY_ADDR, PROXY_PORT))?;

    let arp_before = gw.counter("arp")?;
    gw.client.ip(&["neigh", "flush", "all"])?;
    gw.gw.ip(&["neigh", "flush", "all"])?;
    ensure!(
        !gw.gw
            .ip(&["neigh", "show"])?
            .contains(&CLIENT_ADDR.to_string())
            || gw.gw.ip(&["neigh", "show"])?.contains("FAILED"),
        "neighbour cache not flushed"
    );

    can_talk(&gw.client, None, at(PROXY_ADDR, PROXY_PORT)).context("after the flush")?;
    ensure!(gw.counter("arp")? > arp_before, "no ARP passed the filter");
    let neigh = gw.gw.ip(&["neigh", "show", &CLIENT_ADDR.to_string()])?;
    ensure!(
        neigh.contains("lladdr"),
        "gateway did not relearn the client: {neigh}"
    );
    Ok(())
}

#[test]
fn neighbours_resolve_again_after_the_cache_is_flushed_native() -> Result<()> {
    neighbours_resolve_again_after_the_cache_is_flushed(Mode::Native)
}

#[test]
fn neighbours_resolve_again_after_the_cache_is_flushed_skb() -> Result<()> {
    neighbours_resolve_again_after_the_cache_is_flushed(Mode::Skb)
}

// --- befundctl on a running flow ---------------------------------------------

fn befundctl_block_stops_an_established_connection(mode: Mode) -> Result<()> {
    let mut gw = Gateway::new(mode, "")?;
    let _proxy = EchoServer::start(&gw.gw, at(PROXY_ADDR, PROXY_PORT))?;
    gw.start_daemon()?;

    let mut stream = connect(&gw.client, None, at(PROXY_ADDR, PROXY_PORT))?;
    round_trip(&mut stream, b"before")?;

    let out = gw.fw(&["block", "192.0.2.100", "--comment", "test"])?;
    ensure!(out.contains("block 192.0.2.100/32: in force"), "{out}");
    ensure!(
        round_trip(&mut stream, b"during").is_err(),
        "data of a blocked flow got through"
    );
    ensure!(gw.counter("block 192.0.2.100/32")? > 0, "block not counted");

    // Unblocked, TCP's retransmission delivers the held-back data on the
    // same connection: the block cut the flow, nothing else broke it.
    gw.fw(&["unblock", "192.0.2.100/32"])?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut echo = [0; 6];
    std::io::Read::read_exact(&mut stream, &mut echo)?;
    ensure!(&echo == b"during", "unexpected echo {echo:?}");
    Ok(())
}

#[test]
fn befundctl_block_stops_an_established_connection_native() -> Result<()> {
    befundctl_block_stops_an_established_connection(Mode::Native)
}

#[test]
fn befundctl_block_stops_an_established_connection_skb() -> Result<()> {
    befundctl_block_stops_an_established_connection(Mode::Skb)
}

// --- the gateway's own outbound connections ----------------------------------

fn replies_pass_and_the_same_packets_unsolicited_are_dropped(mode: Mode) -> Result<()> {
    let mut gw = Gateway::new(mode, "")?;
    let _tcp_peer = EchoServer::start(&gw.client, at(CLIENT_ADDR, 9000))?;
    let udp_peer = UdpEcho::start(&gw.client, at(CLIENT_ADDR, 9053))?;
    let unsolicited_sink = udp(&gw.gw, at(GATEWAY_ADDR, 40001))?;

    // Without the filter the unsolicited packets arrive: the kernel answers
    // the SYN-ACK with a reset (nmap: closed), the datagram is received.
    let state = nmap_syn_ack(&gw.client, 9000, GATEWAY_ADDR, 41001)?;
    ensure!(state == "closed", "without the filter nmap saw {state}");
    drop(udp_peer);
    let sender = udp(&gw.client, at(CLIENT_ADDR, 9053))?;
    sender.send_to(b"unsolicited", at(GATEWAY_ADDR, 40001))?;
    let mut buf = [0; 64];
    unsolicited_sink
        .recv_from(&mut buf)
        .context("unsolicited datagram without the filter")?;
    drop(sender);
    let _udp_peer = UdpEcho::start(&gw.client, at(CLIENT_ADDR, 9053))?;

    gw.start_daemon()?;
    let replies_before = gw.counter("reply")?;

    // The gateway opens a TCP connection and a UDP exchange: replies pass.
    let mut stream = connect_from(&gw.gw, Some(at(GATEWAY_ADDR, 41000)), at(CLIENT_ADDR, 9000))
        .context("gateway connects out")?;
    round_trip(&mut stream, b"outbound")?;
    let socket = udp(&gw.gw, at(GATEWAY_ADDR, 40000))?;
    socket.send_to(b"query", at(CLIENT_ADDR, 9053))?;
    let (n, from) = socket.recv_from(&mut buf).context("UDP reply")?;
    ensure!(&buf[..n] == b"query" && from == at(CLIENT_ADDR, 9053));
    ensure!(gw.counter("reply")? > replies_before, "replies not counted");

    // The same kind of packets to ports the gateway never used: dropped.
    let drops_before = gw.counter("default_drop")?;
    let state = nmap_syn_ack(&gw.client, 9000, GATEWAY_ADDR, 41001)?;
    ensure!(state == "filtered", "unsolicited SYN-ACK: nmap saw {state}");
    drop(_udp_peer);
    let sender = udp(&gw.client, at(CLIENT_ADDR, 9053))?;
    sender.send_to(b"unsolicited", at(GATEWAY_ADDR, 40001))?;
    ensure!(
        unsolicited_sink.recv_from(&mut buf).is_err(),
        "an unsolicited datagram reached the gateway"
    );
    ensure!(
        gw.counter("default_drop")? >= drops_before + 2,
        "unsolicited packets not counted as drops"
    );
    Ok(())
}

#[test]
fn replies_pass_and_the_same_packets_unsolicited_are_dropped_native() -> Result<()> {
    replies_pass_and_the_same_packets_unsolicited_are_dropped(Mode::Native)
}

#[test]
fn replies_pass_and_the_same_packets_unsolicited_are_dropped_skb() -> Result<()> {
    replies_pass_and_the_same_packets_unsolicited_are_dropped(Mode::Skb)
}

// --- fail closed -------------------------------------------------------------

/// Connection attempts in a loop from the client to a filtered port.
struct Probe {
    attempts: Arc<AtomicUsize>,
    successes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Probe {
    fn start(gw: &Gateway, target: SocketAddr) -> Self {
        let attempts = Arc::new(AtomicUsize::new(0));
        let successes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client = gw.client.name().to_owned();
        let thread = {
            let (attempts, successes, stop) = (attempts.clone(), successes.clone(), stop.clone());
            thread::spawn(move || {
                let ns = befund_testbed::netns::Netns::existing(&client);
                // Bounded: the test stops it, and it never runs past 3000 tries.
                while !stop.load(Ordering::Relaxed) && attempts.load(Ordering::SeqCst) < 3000 {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if connect_within(&ns, None, target, Duration::from_millis(100)).is_ok() {
                        successes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        Self {
            attempts,
            successes,
            stop,
            thread: Some(thread),
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.attempts.load(Ordering::SeqCst),
            self.successes.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn filter_stays_attached_while_the_daemon_is_killed_and_restarted(mode: Mode) -> Result<()> {
    let mut gw = Gateway::new(mode, "")?;
    let target = at(PROXY_ADDR, 8080);
    let behind = EchoServer::start(&gw.gw, target)?;
    can_talk(&gw.client, None, target).context("the listener answers without the filter")?;
    let accepted_before = behind.accepted();

    gw.start_daemon()?;
    let probe = Probe::start(&gw, target);
    // Each phase lasts until the probe has knocked several more times and
    // the filter has counted the drops.
    let phase = |gw: &Gateway, what: &str| -> Result<()> {
        let (attempts, drops) = (probe.attempts(), gw.counter("default_drop")?);
        eventually(what, || {
            Ok(probe.attempts() >= attempts + 10 && gw.counter("default_drop")? > drops)
        })
    };
    phase(&gw, "the probe is dropped while the daemon runs")?;

    gw.kill_daemon()?;
    let link = gw.wan_link()?;
    ensure!(
        link.contains(mode.ip_link_keyword()),
        "no XDP program on the interface after the daemon died:\n{link}"
    );
    // befundctl reads the pinned counters without the daemon: still counting.
    phase(&gw, "the probe is dropped while the daemon is dead")?;

    let attached = gw.start_daemon()?;
    ensure!(
        attached.contains("Replaced"),
        "restart did not replace in place: {attached}"
    );
    phase(&gw, "the probe is dropped after the restart")?;

    let (attempts, successes) = probe.finish();
    ensure!(attempts >= 30, "the probe hardly ran ({attempts} attempts)");
    ensure!(
        successes == 0,
        "{successes} of {attempts} probe connections got through"
    );
    ensure!(
        behind.accepted() == accepted_before,
        "the listener behind the filter accepted a probe"
    );
    Ok(())
}

#[test]
fn filter_stays_attached_while_the_daemon_is_killed_and_restarted_native() -> Result<()> {
    filter_stays_attached_while_the_daemon_is_killed_and_restarted(Mode::Native)
}

#[test]
fn filter_stays_attached_while_the_daemon_is_killed_and_restarted_skb() -> Result<()> {
    filter_stays_attached_while_the_daemon_is_killed_and_restarted(Mode::Skb)
}

// --- persistence and detach --------------------------------------------------

#[test]
fn befundctl_rules_persist_across_restarts_and_detach_removes_the_filter() -> Result<()> {
    let mut gw = Gateway::new(Mode::Native, "blocked = [\"192.0.2.201/32\"]")?;
    let _proxy = EchoServer::start(&gw.gw, at(PROXY_ADDR, PROXY_PORT))?;
    let _admin = EchoServer::start(&gw.gw, at(PROXY_ADDR, 8080))?;
    gw.start_daemon()?;

    gw.fw(&["block", "192.0.2.200/32", "--comment", "incident"])?;
    gw.fw(&[
        "allow",
        "--source",
        "192.0.2.100/32",
        "--proto",
        "tcp",
        "--port",
        "8080",
    ])?;
    can_talk(&gw.client, None, at(PROXY_ADDR, 8080)).context("allowed by befundctl")?;
    ensure!(connect(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT)).is_err());

    let status = gw.fw(&["status"])?;
    let block_line = line_with(&status, "block 192.0.2.200/32")?;
    ensure!(
        block_line.contains("befundctl") && block_line.contains("incident"),
        "{status}"
    );
    ensure!(
        line_with(&status, "block 192.0.2.201/32")?.contains("config"),
        "{status}"
    );

    // A config rule cannot be removed with befundctl; a bad prefix is refused.
    let err = gw.fw_err(&["unblock", "192.0.2.201/32"])?;
    ensure!(err.contains("comes from the configuration file"), "{err}");
    let err = gw.fw_err(&["block", "10.0.0.1/8"])?;
    ensure!(err.contains("did you mean 10.0.0.0/8"), "{err}");

    // Restart: the same rules with the same counter slots.
    gw.stop_daemon()?;
    ensure!(
        gw.wan_link()?.contains("xdp"),
        "filter gone after a clean stop"
    );
    ensure!(connect(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT)).is_err());
    gw.start_daemon()?;
    let after = gw.fw(&["status"])?;
    let (before, now) = (
        rule_columns(block_line),
        rule_columns(line_with(&after, "block 192.0.2.200/32")?),
    );
    ensure!(
        before.slot == now.slot && before.origin == now.origin,
        "slot or origin changed across the restart:\n{status}\n{after}"
    );
    ensure!(
        now.packets >= before.packets && before.packets > 0,
        "the rule's counter did not survive the restart:\n{status}\n{after}"
    );
    can_talk(&gw.client, None, at(PROXY_ADDR, 8080)).context("allow rule after restart")?;

    // Detach: the filter and the pins go, the interface is open.
    gw.stop_daemon()?;
    let out = gw.fw(&["detach"])?;
    ensure!(out.contains("XDP link unpinned"), "{out}");
    ensure!(
        !gw.wan_link()?.contains("xdp"),
        "XDP still attached:\n{}",
        gw.wan_link()?
    );
    ensure!(!gw.pin_root().join("maps").exists(), "maps still pinned");
    can_talk(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT))
        .context("no filter after detach")?;
    let err = gw.fw_err(&["status"])?;
    ensure!(err.contains("no filter pinned under"), "{err}");
    ensure!(err.lines().count() == 1, "error is not one line: {err}");

    // A start after detach (as after a reboot) restores befundctl's rules
    // from the state file.
    gw.start_daemon()?;
    ensure!(connect(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT)).is_err());
    can_talk(&gw.client, None, at(PROXY_ADDR, 8080)).context("allow rule after detach")?;
    Ok(())
}

// --- reload -------------------------------------------------------------------

#[test]
fn sighup_applies_a_changed_firewall_section() -> Result<()> {
    let mut gw = Gateway::new(Mode::Native, "")?;
    let _proxy = EchoServer::start(&gw.gw, at(PROXY_ADDR, PROXY_PORT))?;
    let _admin = EchoServer::start(&gw.gw, at(PROXY_ADDR, 2222))?;
    gw.start_daemon()?;
    can_talk(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT))?;
    ensure!(connect(&gw.client, None, at(PROXY_ADDR, 2222)).is_err());

    gw.write_config(
        "blocked = [\"192.0.2.200/32\"]\n\
         [[firewall.allow]]\n\
         source = \"192.0.2.100/32\"\n\
         protocol = \"tcp\"\n\
         port = 2222\n\
         comment = \"admin\"",
    )?;
    gw.reload_daemon()?;
    ensure!(
        connect(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT)).is_err(),
        "the block added by the reload is not in force"
    );
    can_talk(&gw.client, None, at(PROXY_ADDR, 2222)).context("allow rule added by reload")?;

    // Back to the first file: both rules go again.
    gw.write_config("")?;
    gw.reload_daemon()?;
    can_talk(&gw.client, Some(BLOCKED_ADDR), at(PROXY_ADDR, PROXY_PORT))?;
    ensure!(connect(&gw.client, None, at(PROXY_ADDR, 2222)).is_err());
    Ok(())
}

/// The columns of a rule line of `befundctl fw status`.
struct RuleColumns<'a> {
    slot: &'a str,
    origin: &'a str,
    packets: u64,
}

fn rule_columns(line: &str) -> RuleColumns<'_> {
    let mut cols = line.split_whitespace();
    RuleColumns {
        slot: cols.next().unwrap_or_default(),
        origin: cols.next().unwrap_or_default(),
        packets: cols.next().and_then(|p| p.parse().ok()).unwrap_or_default(),
    }
}

fn line_with<'a>(text: &'a str, needle: &str) -> Result<&'a str> {
    text.lines()
        .find(|l| l.contains(needle))
        .with_context(|| format!("no line with `{needle}` in:\n{text}"))
}
