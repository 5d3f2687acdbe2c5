//! Plain-data types shared by the WAN filter (`befund-ebpf`) and userspace.
//!
//! Every type here is `#[repr(C)]`, `Copy`, built from explicit-width integers
//! and laid out without implicit padding, because the kernel and userspace
//! exchange them as raw bytes through BPF maps.
//!
//! Addresses are always 16 bytes: IPv6 as is, IPv4 as an IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`). One map and one lookup then serve both families,
//! and an IPv4 prefix `/n` becomes the prefix `/96+n`.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod counters;
pub mod maps;

pub use counters::*;
pub use maps::*;
