//! Host-side stub: this crate's real content is the `befund-filter` binary,
//! built for `bpfel-unknown-none` by befund-proxy's build script.
#![no_std]
