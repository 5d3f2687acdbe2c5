//! The filter's maps, pinned by name so that the daemon and `befundctl` find
//! them under the pin root (see [`befund_common::names`]). Their keys are the
//! word forms from [`crate::keys`] of the shared key types.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use befund_common::{
    AllowPorts, COUNTER_SLOTS, Counter, FilterSettings, FlowState, MAX_ADDRESS_ENTRIES,
    MAX_ALLOW_RULES, MAX_FLOWS, allow_port_bit, names,
};

use crate::keys::{AddrKey, AddrWords, AllowKey, AllowWords, FlowWords};

/// Global settings in slot 0.
#[map(name = "BEFUND_SETTINGS")]
pub static SETTINGS: Array<FilterSettings> = Array::pinned(1, 0);

/// The gateway's own addresses, value: `LOCAL_*` flags.
#[map(name = "BEFUND_LOCAL")]
pub static LOCAL_ADDRS: HashMap<AddrWords, u32> = HashMap::pinned(MAX_ADDRESS_ENTRIES, 0);

/// Protected destinations, value: counter slot.
#[map(name = "BEFUND_PROTECT")]
pub static PROTECTED: LpmTrie<AddrWords, u32> = LpmTrie::pinned(MAX_ADDRESS_ENTRIES, 0);

/// Blocked sources, value: counter slot.
#[map(name = "BEFUND_BLOCK")]
pub static BLOCKLIST: LpmTrie<AddrWords, u32> = LpmTrie::pinned(MAX_ADDRESS_ENTRIES, 0);

/// Operator allow rules, value: counter slot.
#[map(name = "BEFUND_ALLOW")]
pub static ALLOW_RULES: LpmTrie<AllowWords, u32> = LpmTrie::pinned(MAX_ALLOW_RULES, 0);

/// The (protocol, port) pairs that at least one allow rule opens, in slot 0.
#[map(name = "BEFUND_ALLOW_PORTS")]
pub static ALLOW_PORTS: Array<AllowPorts> = Array::pinned(1, 0);

/// Flows the gateway opened, written by the egress program.
#[map(name = "BEFUND_FLOWS")]
pub static FLOWS: LruHashMap<FlowWords, FlowState> = LruHashMap::pinned(MAX_FLOWS, 0);

/// Packets and bytes per verdict slot and CPU.
#[map(name = "BEFUND_COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

// The `map` attribute takes a literal; make sure each one is the shared name.
const _: () = {
    assert!(same(names::SETTINGS, "BEFUND_SETTINGS"));
    assert!(same(names::LOCAL_ADDRS, "BEFUND_LOCAL"));
    assert!(same(names::PROTECTED, "BEFUND_PROTECT"));
    assert!(same(names::BLOCKLIST, "BEFUND_BLOCK"));
    assert!(same(names::ALLOW_RULES, "BEFUND_ALLOW"));
    assert!(same(names::ALLOW_PORTS, "BEFUND_ALLOW_PORTS"));
    assert!(same(names::FLOWS, "BEFUND_FLOWS"));
    assert!(same(names::COUNTERS, "BEFUND_COUNTERS"));
};

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The counter slot of the longest prefix in `trie` that contains `addr`.
#[inline(always)]
pub fn slot_of_addr(trie: &LpmTrie<AddrWords, u32>, addr: &AddrKey) -> Option<u32> {
    trie.get(addr.as_trie_key()).copied()
}

/// The counter slot of the most specific allow rule for `proto`, destination
/// `port` and `source`. The rules are searched only when one of them opens
/// `proto` to `port` at all.
#[inline(always)]
pub fn slot_of_allow_rule(proto: u8, port: [u8; 2], source: &AddrKey) -> Option<u32> {
    let (word, mask) = allow_port_bit(proto, u16::from_be_bytes(port))?;
    // An array lookup is inlined by the kernel; `get` keeps the index
    // checked for the verifier.
    let opened = ALLOW_PORTS
        .get(0)
        .and_then(|ports| ports.get(word))
        .is_some_and(|bits| bits & mask != 0);
    if !opened {
        return None;
    }
    let key = AllowKey::new(proto, port, source);
    ALLOW_RULES.get(key.as_trie_key()).copied()
}

/// The `LOCAL_*` flags of `addr`, 0 when it is not one of the gateway's.
#[inline(always)]
pub fn local_flags(addr: &AddrKey) -> u32 {
    match LOCAL_ADDRS.get_ptr(addr.addr()) {
        // SAFETY: the pointer comes from a successful lookup and points to the
        // entry's u32 value; a concurrent update from userspace replaces the
        // whole aligned word, so the read sees the old or the new flags.
        Some(flags) => unsafe { *flags },
        None => 0,
    }
}

/// The settings in force. All zero until userspace writes them; `None`
/// only if the kernel could not find slot 0 of a one-slot array.
#[inline(always)]
pub fn settings() -> Option<&'static FilterSettings> {
    SETTINGS.get(0)
}

/// Adds one packet of `bytes` to `slot` on this CPU.
#[inline(always)]
pub fn count(slot: u32, bytes: usize) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it points to this CPU's copy of the slot; the program runs
        // with migration disabled and does not nest on one CPU, so nothing
        // else writes it meanwhile.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}
