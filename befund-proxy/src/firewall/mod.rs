//! The XDP WAN filter: loading, attaching, pinning and rule maps.

/// The compiled filter object, embedded at build time.
pub static FILTER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/befund-filter"));
