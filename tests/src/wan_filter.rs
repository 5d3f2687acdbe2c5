//! The real WAN filter object, loaded into the kernel but attached nowhere,
//! with its maps at hand: frames go through it with `BPF_PROG_TEST_RUN`.
//!
//! The object declares its maps pinned by name. Each [`LoadedFilter`] mounts
//! a private bpffs of its own for those pins (laid out as under the
//! appliance's pin root) and unmounts it when dropped, so tests never share
//! maps with each other or with a running appliance. Rules and settings are
//! written with the daemon's own [`FilterMaps`], which keeps the filter's
//! entry counts and allow-port bitmap in step with the rule maps.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use befund_common::{
    Addr, COUNTER_SLOTS, Counter, FilterSettings, FlowKey, FlowState, names, programs,
};
use befund_proxy::{
    cidr::Cidr,
    firewall::{AllowRule, FilterMaps, Protocol, Rule},
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `TC_ACT_OK`.
pub const TC_ACT_OK: u32 = 0;

/// A bpffs mounted on a fresh directory, unmounted and removed on drop.
pub struct BpffsMount {
    path: PathBuf,
}

impl BpffsMount {
    /// Mounts a new bpffs under the temporary directory.
    ///
    /// # Errors
    ///
    /// When the directory cannot be made or the mount fails (needs root).
    pub fn new() -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "befund-bpffs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).with_context(|| format!("failed to create {}", path.display()))?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Err(e) = mount(Some("bpffs"), &path, Some("bpf"), flags, None::<&str>) {
            let _ = fs::remove_dir(&path);
            bail!(
                "failed to mount a bpffs on {} (needs root): {e}",
                path.display()
            );
        }
        Ok(Self { path })
    }

    /// Where the bpffs is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("failed to unmount {}: {e}", self.path.display());
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// The address as the filter's maps store it: IPv6, or IPv4-mapped IPv6.
pub fn map_addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The LPM prefix length over [`map_addr`] of the network `ip`/`len`.
pub fn map_prefix(ip: IpAddr, len: u8) -> u32 {
    match ip {
        IpAddr::V4(_) => 96 + u32::from(len),
        IpAddr::V6(_) => u32::from(len),
    }
}

/// Parses `a.b.c.d/n` or `x::y/n` (a bare address is a host route).
///
/// # Panics
///
/// On text that is not such a network: fixtures are written by hand.
pub fn net(text: &str) -> (IpAddr, u8) {
    let (addr, len) = text.split_once('/').unwrap_or((text, ""));
    let addr: IpAddr = addr.parse().expect("fixture network has an IP address");
    let len = if len.is_empty() {
        if addr.is_ipv4() { 32 } else { 128 }
    } else {
        len.parse().expect("fixture prefix length is a number")
    };
    (addr, len)
}

/// Counter totals over all CPUs, one per slot.
pub type CounterTotals = Vec<Counter>;

/// The WAN filter loaded from the object the daemon embeds.
pub struct LoadedFilter {
    // Declared before the mount so the maps close before it goes away.
    ebpf: Ebpf,
    _pins: BpffsMount,
}

impl LoadedFilter {
    /// Loads both programs of [`befund_proxy::firewall::FILTER_OBJECT`]
    /// into the kernel (the verifier runs here) without attaching them.
    ///
    /// # Errors
    ///
    /// When the bpffs cannot be mounted or the kernel rejects a program.
    pub fn load() -> Result<Self> {
        let pins = BpffsMount::new()?;
        let maps_dir = befund_proxy::firewall::maps::maps_dir(pins.path());
        fs::create_dir(&maps_dir)
            .with_context(|| format!("failed to create {}", maps_dir.display()))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(befund_proxy::firewall::FILTER_OBJECT)
            .context("failed to load the filter object")?;

        let xdp: &mut Xdp = program_mut(&mut ebpf, programs::WAN_INGRESS)?.try_into()?;
        xdp.load()
            .with_context(|| format!("the kernel rejected {}", programs::WAN_INGRESS))?;
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, programs::WAN_EGRESS)?.try_into()?;
        tc.load()
            .with_context(|| format!("the kernel rejected {}", programs::WAN_EGRESS))?;

        Ok(Self { ebpf, _pins: pins })
    }

    /// Runs the ingress program once on `frame` and returns its XDP action.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the test run (for example a frame shorter
    /// than an Ethernet header).
    pub fn ingress(&self, frame: &[u8]) -> Result<u32> {
        Ok(self.time_ingress(frame, 1)?.0)
    }

    /// Runs the ingress program `repeat` times on `frame` in the kernel;
    /// returns the action and the kernel's mean time per run.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the test run.
    pub fn time_ingress(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let xdp: &Xdp = program(&self.ebpf, programs::WAN_INGRESS)?.try_into()?;
        let result = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .context("failed to test-run the ingress program")?;
        Ok((result.return_value, result.duration))
    }

    /// Runs the egress program once on `frame` and returns its TC action.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the test run.
    pub fn egress(&self, frame: &[u8]) -> Result<u32> {
        let tc: &SchedClassifier = program(&self.ebpf, programs::WAN_EGRESS)?.try_into()?;
        let result = tc
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .context("failed to test-run the egress program")?;
        Ok(result.return_value)
    }

    /// The pin root of the filter's maps, as `firewall.pin_root` names it.
    pub fn pin_root(&self) -> &Path {
        self._pins.path()
    }

    /// The filter's maps as the daemon and `befundctl` open them.
    ///
    /// # Errors
    ///
    /// When a map cannot be opened.
    pub fn maps(&self) -> Result<FilterMaps> {
        FilterMaps::open(self.pin_root()).context("failed to open the pinned maps")
    }

    /// Writes the global settings (their entry counts are the maps').
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn set_settings(&mut self, settings: FilterSettings) -> Result<()> {
        self.maps()?
            .set_settings(&settings)
            .context("failed to write the settings")
    }

    /// The settings in the map.
    ///
    /// # Errors
    ///
    /// When the map cannot be read.
    pub fn settings(&self) -> Result<FilterSettings> {
        self.maps()?
            .settings()
            .context("failed to read the settings")
    }

    /// Marks `ip` as one of the gateway's addresses with `LOCAL_*` `flags`.
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn add_local(&mut self, ip: &str, flags: u32) -> Result<()> {
        let ip: IpAddr = ip.parse().context("local address")?;
        let mut map: HashMap<&mut MapData, Addr, u32> = self.map_mut(names::LOCAL_ADDRS)?;
        map.insert(map_addr(ip), flags, 0)
            .context("failed to add a local address")
    }

    /// Protects the destination `network` (as [`net`] reads it), counted in
    /// `slot`.
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn protect(&mut self, network: &str, slot: u32) -> Result<()> {
        let destination = cidr(network)?;
        self.insert_rule(Rule::Protect { destination }, slot)
    }

    /// Blocks the source `network`, counted in `slot`.
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn block(&mut self, network: &str, slot: u32) -> Result<()> {
        let source = cidr(network)?;
        self.insert_rule(Rule::Block { source }, slot)
    }

    /// Writes `rule` counted in `slot`, as `befundctl fw add` does.
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn insert_rule(&mut self, rule: Rule, slot: u32) -> Result<()> {
        self.maps()?
            .insert_rule(&rule, slot)
            .with_context(|| format!("failed to insert `{rule}`"))
    }

    /// Removes `rule`, as `befundctl fw remove` does.
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn remove_rule(&mut self, rule: Rule) -> Result<()> {
        self.maps()?
            .remove_rule(&rule)
            .with_context(|| format!("failed to remove `{rule}`"))
    }

    /// Allows `proto` to destination `port` from the source `network`,
    /// counted in `slot`.
    ///
    /// # Errors
    ///
    /// When the map update fails.
    pub fn allow(&mut self, proto: u8, port: u16, network: &str, slot: u32) -> Result<()> {
        self.insert_rule(allow_rule(proto, port, network)?, slot)
    }

    /// The recorded flows.
    ///
    /// # Errors
    ///
    /// When the map cannot be read.
    pub fn flows(&mut self) -> Result<Vec<(FlowKey, FlowState)>> {
        let map: HashMap<&mut MapData, FlowKey, FlowState> = self.map_mut(names::FLOWS)?;
        map.iter()
            .collect::<Result<_, _>>()
            .context("failed to read the flows")
    }

    /// Removes every recorded flow.
    ///
    /// # Errors
    ///
    /// When the map cannot be read or written.
    pub fn clear_flows(&mut self) -> Result<()> {
        let flows = self.flows()?;
        let mut map: HashMap<&mut MapData, FlowKey, FlowState> = self.map_mut(names::FLOWS)?;
        for (key, _) in flows {
            map.remove(&key).context("failed to remove a flow")?;
        }
        Ok(())
    }

    /// Moves the last outbound time of every recorded flow `by` into the
    /// past, as if that much time had passed since.
    ///
    /// # Errors
    ///
    /// When the map cannot be read or written.
    pub fn age_flows(&mut self, by: Duration) -> Result<()> {
        let flows = self.flows()?;
        let by = u64::try_from(by.as_nanos()).context("age fits 64 bits of nanoseconds")?;
        let mut map: HashMap<&mut MapData, FlowKey, FlowState> = self.map_mut(names::FLOWS)?;
        for (key, state) in flows {
            let aged = FlowState {
                last_outbound_ns: state.last_outbound_ns.checked_sub(by).with_context(|| {
                    format!(
                        "cannot age a flow by {by} ns: the monotonic clock started only {} ns \
                         before its last packet",
                        state.last_outbound_ns
                    )
                })?,
            };
            map.insert(key, aged, 0).context("failed to age a flow")?;
        }
        Ok(())
    }

    /// Packets and bytes of every slot, summed over all CPUs.
    ///
    /// # Errors
    ///
    /// When the map cannot be read.
    pub fn counters(&mut self) -> Result<CounterTotals> {
        let map: PerCpuArray<&mut MapData, Counter> = self.map_mut(names::COUNTERS)?;
        ensure!(
            map.len() == COUNTER_SLOTS,
            "counter map has {} slots",
            map.len()
        );
        (0..COUNTER_SLOTS)
            .map(|slot| {
                let per_cpu = map.get(&slot, 0).context("failed to read a counter")?;
                Ok(per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                    packets: sum.packets + c.packets,
                    bytes: sum.bytes + c.bytes,
                }))
            })
            .collect()
    }

    fn map_mut<'a, T>(&'a mut self, name: &str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .with_context(|| format!("the filter object has no map {name}"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }
}

/// A network as [`net`] reads it.
///
/// # Errors
///
/// When the text is not a network without host bits.
pub fn cidr(network: &str) -> Result<Cidr> {
    network
        .parse()
        .with_context(|| format!("`{network}` is not a network"))
}

/// The allow rule for `proto` (6 or 17) to `port` from `network`.
///
/// # Errors
///
/// When the protocol, port or network cannot be a rule.
pub fn allow_rule(proto: u8, port: u16, network: &str) -> Result<Rule> {
    let protocol = match proto {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        other => bail!("no allow rule for IP protocol {other}"),
    };
    Ok(Rule::Allow(AllowRule {
        source: cidr(network)?,
        protocol,
        port: std::num::NonZeroU16::new(port).context("port 0 cannot be allowed")?,
    }))
}

fn program<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::programs::Program> {
    ebpf.program(name)
        .with_context(|| format!("the filter object has no program {name}"))
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("the filter object has no program {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_networks_map_into_the_ipv4_mapped_range() {
        let (ip, len) = net("198.51.100.0/24");

        assert_eq!(map_prefix(ip, len), 120);
        assert_eq!(map_addr(ip)[10..], [0xff, 0xff, 198, 51, 100, 0]);
    }

    #[test]
    fn bare_address_is_a_host_route() {
        assert_eq!(net("2001:db8::1").1, 128);
        assert_eq!(net("192.0.2.1").1, 32);
    }
}
