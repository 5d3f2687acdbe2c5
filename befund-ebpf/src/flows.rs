//! Flows the gateway opened itself: recorded on egress, matched on ingress.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use befund_common::FlowState;

use crate::{keys::FlowWords, maps::FLOWS};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Records an outbound packet of a flow the gateway opens, new or known.
#[inline(always)]
pub fn open(flow: &FlowWords) {
    let state = FlowState {
        // SAFETY: the helper only reads the monotonic clock.
        last_outbound_ns: unsafe { bpf_ktime_get_ns() },
    };
    // A full map evicts its least recently used entry instead of failing;
    // any other error leaves the flow unrecorded, so its replies are dropped.
    let _ = FLOWS.insert(flow, state, 0);
}

/// Records an outbound packet of a flow only if the gateway opened it.
#[inline(always)]
pub fn refresh(flow: &FlowWords) {
    if let Some(state) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: the pointer comes from a successful lookup and points to
        // the entry's value; the helper only reads the monotonic clock. A
        // racing writer stores a timestamp just as recent.
        unsafe { (*state).last_outbound_ns = bpf_ktime_get_ns() };
    }
}

/// Whether the gateway sent a packet of `flow` less than `timeout_secs` ago.
#[inline(always)]
pub fn is_fresh(flow: &FlowWords, timeout_secs: u32) -> bool {
    let Some(state) = FLOWS.get_ptr(flow) else {
        return false;
    };
    // SAFETY: the pointer comes from a successful lookup and points to the
    // entry's value, an aligned u64 that writers replace as a whole; the
    // helper only reads the monotonic clock.
    let (last, now) = unsafe { ((*state).last_outbound_ns, bpf_ktime_get_ns()) };
    // A timestamp from the future (written by hand) wraps to a huge age.
    now.wrapping_sub(last) < u64::from(timeout_secs) * NANOS_PER_SEC
}
