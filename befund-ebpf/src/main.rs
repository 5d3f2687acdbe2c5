//! The Befund WAN filter.
//!
//! - `befund_wan` (XDP, WAN ingress): default deny; admits ARP, neighbour
//!   discovery, TCP to the proxy, the operator's allow rules, path-MTU
//!   signals and replies to flows the gateway opened; drops everything
//!   addressed to a protected host. See `ingress` for the rule order.
//! - `befund_egress` (TC classifier, WAN egress): records the flows the
//!   gateway opens. See `egress`.
//!
//! Nothing here logs per packet; the per-CPU counters are the record.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod egress;
mod flows;
mod frame;
mod headers;
mod ingress;
mod ip;
mod keys;
mod maps;
mod parse;
mod transport;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// XDP entry point on the WAN interface. Frames that cannot be classified
/// are dropped and counted as unparseable.
#[xdp]
pub fn befund_wan(ctx: XdpContext) -> u32 {
    ingress::try_befund_wan(&ctx)
        .unwrap_or(ingress::Verdict::UNPARSEABLE)
        .record(&ctx)
}

/// TC classifier on the WAN interface's egress. Always lets the frame go.
#[classifier]
pub fn befund_egress(ctx: TcContext) -> i32 {
    let _ = egress::try_befund_egress(&ctx);
    TC_ACT_OK
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it exists
    // only because `no_std` binaries must name one.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
