//! The filter's pinned maps, opened by path so that the daemon and
//! `befundctl` work on the same kernel objects.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use befund_common::{
    ALLOW_PORT_WORDS, Addr, AllowPorts, AllowRuleKey, COUNTER_SLOTS, Counter, FilterSettings,
    FlowKey, FlowState, allow_port_bit, names,
};

use super::{
    error::FirewallError,
    rules::{Rule, address_key, allow_key, allow_rule_from_key, cidr_from_key},
};

/// Every map the filter shares with userspace, in pin order.
pub const MAP_NAMES: [&str; 8] = [
    names::SETTINGS,
    names::LOCAL_ADDRS,
    names::PROTECTED,
    names::BLOCKLIST,
    names::ALLOW_RULES,
    names::ALLOW_PORTS,
    names::FLOWS,
    names::COUNTERS,
];

/// The directory under the pin root that holds the maps.
pub fn maps_dir(pin_root: &Path) -> PathBuf {
    pin_root.join("maps")
}

/// Where the map `name` is pinned.
pub fn map_path(pin_root: &Path, name: &str) -> PathBuf {
    maps_dir(pin_root).join(name)
}

/// Packets and bytes of one counter slot, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SlotCounter {
    /// The slot.
    pub slot: u32,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The pinned maps.
///
/// Every change to the rule maps goes through [`FilterMaps::insert_rule`],
/// [`FilterMaps::remove_rule`] or [`FilterMaps::sync_rules`], which then
/// rewrite the summaries the filter uses to skip lookups that cannot match:
/// the entry counts in the settings and the allow-port bitmap.
pub struct FilterMaps {
    settings: Array<MapData, FilterSettings>,
    local: HashMap<MapData, Addr, u32>,
    protected: LpmTrie<MapData, Addr, u32>,
    blocklist: LpmTrie<MapData, Addr, u32>,
    allow: LpmTrie<MapData, AllowRuleKey, u32>,
    allow_ports: Array<MapData, AllowPorts>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    counters: PerCpuArray<MapData, Counter>,
}

fn map_err(operation: &'static str, map: &'static str) -> impl FnOnce(MapError) -> FirewallError {
    move |source| FirewallError::Map {
        operation,
        map,
        source: Box::new(source),
    }
}

fn open<T>(pin_root: &Path, name: &'static str) -> Result<T, FirewallError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = map_path(pin_root, name);
    if !path.exists() {
        return Err(FirewallError::NotPinned {
            pin_root: pin_root.to_path_buf(),
        });
    }
    let data = MapData::from_pin(&path).map_err(map_err("open the pinned", name))?;
    let map = Map::from_map_data(data).map_err(map_err("open the pinned", name))?;
    T::try_from(map).map_err(map_err("use the pinned", name))
}

impl FilterMaps {
    /// Opens the maps pinned under `pin_root`.
    ///
    /// # Errors
    ///
    /// [`FirewallError::NotPinned`] when they are not there; a map error when
    /// one has an unexpected type or layout.
    pub fn open(pin_root: &Path) -> Result<Self, FirewallError> {
        Ok(Self {
            settings: open(pin_root, names::SETTINGS)?,
            local: open(pin_root, names::LOCAL_ADDRS)?,
            protected: open(pin_root, names::PROTECTED)?,
            blocklist: open(pin_root, names::BLOCKLIST)?,
            allow: open(pin_root, names::ALLOW_RULES)?,
            allow_ports: open(pin_root, names::ALLOW_PORTS)?,
            flows: open(pin_root, names::FLOWS)?,
            counters: open(pin_root, names::COUNTERS)?,
        })
    }

    /// The settings in slot 0.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn settings(&self) -> Result<FilterSettings, FirewallError> {
        self.settings
            .get(&0, 0)
            .map_err(map_err("read", names::SETTINGS))
    }

    /// Replaces the settings. Their entry counts are always those of the
    /// rule maps as they are now, whatever `settings` holds.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn set_settings(&mut self, settings: &FilterSettings) -> Result<(), FirewallError> {
        let settings = FilterSettings {
            protected_entries: entries(self.protected.keys(), names::PROTECTED)?,
            blocked_entries: entries(self.blocklist.keys(), names::BLOCKLIST)?,
            allow_entries: entries(self.allow.keys(), names::ALLOW_RULES)?,
            ..*settings
        };
        self.settings
            .set(0, settings, 0)
            .map_err(map_err("write", names::SETTINGS))
    }

    /// The allow-port bitmap.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn allow_ports(&self) -> Result<Box<AllowPorts>, FirewallError> {
        self.allow_ports
            .get(&0, 0)
            .map(Box::new)
            .map_err(map_err("read", names::ALLOW_PORTS))
    }

    /// Rewrites the allow-port bitmap and the entry counts from the rule
    /// maps. Called after each change to them: a rule takes effect only
    /// once it is counted (and its port marked), and a count drops only
    /// after its rule is gone, so a rule that stays is never skipped.
    fn publish_rule_summary(&mut self) -> Result<(), FirewallError> {
        let mut ports: Box<AllowPorts> = Box::new([0; ALLOW_PORT_WORDS]);
        for key in self.allow.keys() {
            let key = key.map_err(map_err("read", names::ALLOW_RULES))?;
            let data = key.data();
            if let Some((word, mask)) = allow_port_bit(data.proto, u16::from_be_bytes(data.port)) {
                ports[word] |= mask;
            }
        }
        self.allow_ports
            .set(0, *ports, 0)
            .map_err(map_err("write", names::ALLOW_PORTS))?;
        let settings = self.settings()?;
        self.set_settings(&settings)
    }

    /// Makes the local-address map hold exactly `wanted` (address → flags).
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn sync_local(&mut self, wanted: &BTreeMap<Addr, u32>) -> Result<(), FirewallError> {
        for (addr, flags) in wanted {
            self.local
                .insert(addr, flags, 0)
                .map_err(map_err("update", names::LOCAL_ADDRS))?;
        }
        let stale: Vec<Addr> = self
            .local
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains_key(k))
            .collect();
        for addr in stale {
            remove_ok(self.local.remove(&addr)).map_err(map_err("update", names::LOCAL_ADDRS))?;
        }
        Ok(())
    }

    /// The local-address map's entries.
    pub fn local(&self) -> BTreeMap<Addr, u32> {
        self.local.iter().filter_map(Result::ok).collect()
    }

    /// Writes `rule` with counter slot `slot`.
    ///
    /// # Errors
    ///
    /// The map error (e.g. the map is full).
    pub fn insert_rule(&mut self, rule: &Rule, slot: u32) -> Result<(), FirewallError> {
        self.insert_rule_entry(rule, slot)?;
        self.publish_rule_summary()
    }

    fn insert_rule_entry(&mut self, rule: &Rule, slot: u32) -> Result<(), FirewallError> {
        match rule {
            Rule::Protect { destination } => self
                .protected
                .insert(&address_key(destination), slot, 0)
                .map_err(map_err("insert into", names::PROTECTED)),
            Rule::Block { source } => self
                .blocklist
                .insert(&address_key(source), slot, 0)
                .map_err(map_err("insert into", names::BLOCKLIST)),
            Rule::Allow(allow) => self
                .allow
                .insert(&allow_key(allow), slot, 0)
                .map_err(map_err("insert into", names::ALLOW_RULES)),
        }
    }

    /// Removes `rule`; a rule that is not there is no error.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn remove_rule(&mut self, rule: &Rule) -> Result<(), FirewallError> {
        self.remove_rule_entry(rule)?;
        self.publish_rule_summary()
    }

    fn remove_rule_entry(&mut self, rule: &Rule) -> Result<(), FirewallError> {
        match rule {
            Rule::Protect { destination } => {
                remove_ok(self.protected.remove(&address_key(destination)))
                    .map_err(map_err("remove from", names::PROTECTED))
            }
            Rule::Block { source } => remove_ok(self.blocklist.remove(&address_key(source)))
                .map_err(map_err("remove from", names::BLOCKLIST)),
            Rule::Allow(allow) => remove_ok(self.allow.remove(&allow_key(allow)))
                .map_err(map_err("remove from", names::ALLOW_RULES)),
        }
    }

    /// Every rule in the maps with its slot. Entries that no rule can
    /// describe (malformed keys) are left out.
    pub fn rules(&self) -> BTreeMap<Rule, u32> {
        let protect = self
            .protected
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, slot)| {
                cidr_from_key(&k).map(|destination| (Rule::Protect { destination }, slot))
            });
        let block = self
            .blocklist
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, slot)| cidr_from_key(&k).map(|source| (Rule::Block { source }, slot)));
        let allow = self
            .allow
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, slot)| allow_rule_from_key(&k).map(|a| (Rule::Allow(a), slot)));
        protect.chain(block).chain(allow).collect()
    }

    /// Makes the rule maps hold exactly `wanted` (rule → slot). New entries
    /// go in before stale ones come out, so no rule that stays is ever
    /// missing.
    ///
    /// # Errors
    ///
    /// The first map error.
    pub fn sync_rules(&mut self, wanted: &BTreeMap<Rule, u32>) -> Result<(), FirewallError> {
        for (rule, slot) in wanted {
            self.insert_rule_entry(rule, *slot)?;
        }
        self.publish_rule_summary()?;
        self.remove_stale(wanted)?;
        self.publish_rule_summary()
    }

    fn remove_stale(&mut self, wanted: &BTreeMap<Rule, u32>) -> Result<(), FirewallError> {
        let stale_protect: Vec<_> = self
            .protected
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !cidr_from_key(k)
                    .is_some_and(|destination| wanted.contains_key(&Rule::Protect { destination }))
            })
            .collect();
        for key in stale_protect {
            remove_ok(self.protected.remove(&key))
                .map_err(map_err("remove from", names::PROTECTED))?;
        }
        let stale_block: Vec<_> = self
            .blocklist
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !cidr_from_key(k).is_some_and(|source| wanted.contains_key(&Rule::Block { source }))
            })
            .collect();
        for key in stale_block {
            remove_ok(self.blocklist.remove(&key))
                .map_err(map_err("remove from", names::BLOCKLIST))?;
        }
        let stale_allow: Vec<_> = self
            .allow
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !allow_rule_from_key(k).is_some_and(|a| wanted.contains_key(&Rule::Allow(a)))
            })
            .collect();
        for key in stale_allow {
            remove_ok(self.allow.remove(&key))
                .map_err(map_err("remove from", names::ALLOW_RULES))?;
        }
        Ok(())
    }

    /// Every counter slot, summed over CPUs.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn counters(&self) -> Result<Vec<SlotCounter>, FirewallError> {
        (0..COUNTER_SLOTS.min(self.counters.len()))
            .map(|slot| {
                let per_cpu = self
                    .counters
                    .get(&slot, 0)
                    .map_err(map_err("read", names::COUNTERS))?;
                Ok(per_cpu.iter().fold(
                    SlotCounter {
                        slot,
                        ..Default::default()
                    },
                    |sum, c| SlotCounter {
                        slot,
                        packets: sum.packets.wrapping_add(c.packets),
                        bytes: sum.bytes.wrapping_add(c.bytes),
                    },
                ))
            })
            .collect()
    }

    /// Sets `slot`'s counters to zero on every CPU.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn zero_counter(&mut self, slot: u32) -> Result<(), FirewallError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| FirewallError::Map {
            operation: "count the CPUs for",
            map: names::COUNTERS,
            source: Box::new(MapError::IoError(e)),
        })?;
        let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(|e| {
            FirewallError::Map {
                operation: "zero a slot of",
                map: names::COUNTERS,
                source: Box::new(MapError::IoError(e)),
            }
        })?;
        self.counters
            .set(slot, zeros, 0)
            .map_err(map_err("zero a slot of", names::COUNTERS))
    }

    /// Number of flows the gateway opened that are currently tracked.
    pub fn flow_count(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
    }
}

/// Number of keys in a map, as a settings field holds it.
fn entries<K>(
    keys: impl Iterator<Item = Result<K, MapError>>,
    map: &'static str,
) -> Result<u32, FirewallError> {
    let mut count = 0u32;
    for key in keys {
        key.map_err(map_err("count the entries of", map))?;
        count = count.saturating_add(1);
    }
    Ok(count)
}

/// Removing a key that is absent is fine.
fn remove_ok(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(2) => Ok(()),
        other => other,
    }
}
