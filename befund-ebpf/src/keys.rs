//! Map keys as the kernel program builds them.
//!
//! The bytes are exactly those of the shared types in `befund_common`
//! ([`Addr`], [`AllowRuleKey`], [`FlowKey`]), which userspace writes. Here
//! they are held in `u32` words, each made with `from_ne_bytes` from four
//! bytes in network order, so that the program moves addresses a word at a
//! time: the shared types consist of byte arrays, which the compiler copies
//! byte by byte.

use core::mem::size_of;

use aya_ebpf::maps::lpm_trie::Key;
use befund_common::{ALLOW_RULE_FIXED_BITS, Addr, AllowRuleKey, FlowKey};

/// The 16 bytes of an [`Addr`], in four words.
pub type AddrWords = [u32; 4];

/// Full-length prefix of an address key.
const ADDR_BITS: u32 = 128;

/// The words of an IPv6 address.
#[inline(always)]
pub fn ipv6_words(addr: &Addr) -> AddrWords {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

/// The words of the IPv4-mapped address `::ffff:a.b.c.d`.
#[inline(always)]
pub fn ipv4_mapped_words(addr: &[u8; 4]) -> AddrWords {
    [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(*addr),
    ]
}

/// The key of a full-length lookup in an address trie: the layout of
/// `Key<AddrWords>` (prefix length, then the address) without its packing.
#[repr(C)]
pub struct AddrKey {
    prefix_len: u32,
    addr: AddrWords,
}

impl AddrKey {
    /// The key of `addr`.
    #[inline(always)]
    pub fn new(addr: AddrWords) -> Self {
        Self {
            prefix_len: ADDR_BITS,
            addr,
        }
    }

    /// The address itself, which is also the key of the local addresses.
    #[inline(always)]
    pub fn addr(&self) -> &AddrWords {
        &self.addr
    }

    /// The same bytes as the trie's key type.
    #[inline(always)]
    pub fn as_trie_key(&self) -> &Key<AddrWords> {
        // SAFETY: `Key<AddrWords>` is repr(C, packed): a u32 and 16 bytes,
        // 20 bytes in all, alignment 1. `AddrKey` is repr(C) with the same
        // fields in the same order and no padding (asserted below), so the
        // reference views the same initialised bytes with a weaker alignment.
        unsafe { &*(self as *const Self).cast::<Key<AddrWords>>() }
    }
}

/// The bytes of an [`AllowRuleKey`]: protocol, a reserved zero byte and
/// the destination port in one word, then the source address.
#[repr(C)]
pub struct AllowWords {
    proto_port: u32,
    source: AddrWords,
}

/// The key of a full-length allow-rule lookup, unpacked like [`AddrKey`].
#[repr(C)]
pub struct AllowKey {
    prefix_len: u32,
    rule: AllowWords,
}

impl AllowKey {
    /// The key of `proto` to destination `port` from `source`.
    #[inline(always)]
    pub fn new(proto: u8, port: [u8; 2], source: &AddrKey) -> Self {
        Self {
            prefix_len: ALLOW_RULE_FIXED_BITS + ADDR_BITS,
            rule: AllowWords {
                proto_port: u32::from_ne_bytes([proto, 0, port[0], port[1]]),
                source: *source.addr(),
            },
        }
    }

    /// The same bytes as the trie's key type.
    #[inline(always)]
    pub fn as_trie_key(&self) -> &Key<AllowWords> {
        // SAFETY: as for `AddrKey::as_trie_key`: same repr(C) fields without
        // padding, 24 bytes, and the packed target has alignment 1.
        unsafe { &*(self as *const Self).cast::<Key<AllowWords>>() }
    }
}

/// The bytes of a [`FlowKey`]: remote and local address, the two ports in
/// one word, the protocol and three zero bytes in another.
#[repr(C)]
pub struct FlowWords {
    remote: AddrWords,
    local: AddrWords,
    ports: u32,
    proto: u32,
}

impl FlowWords {
    /// The key of a flow between the gateway's `local` end and a `remote`
    /// peer.
    #[inline(always)]
    pub fn new(
        remote: &AddrKey,
        local: &AddrKey,
        remote_port: [u8; 2],
        local_port: [u8; 2],
        proto: u8,
    ) -> Self {
        let [r0, r1] = remote_port;
        let [l0, l1] = local_port;
        Self {
            remote: *remote.addr(),
            local: *local.addr(),
            ports: u32::from_ne_bytes([r0, r1, l0, l1]),
            proto: u32::from_ne_bytes([proto, 0, 0, 0]),
        }
    }
}

const _: () = {
    assert!(size_of::<AddrWords>() == size_of::<Addr>());
    assert!(size_of::<AddrKey>() == size_of::<Key<AddrWords>>());
    assert!(size_of::<AllowWords>() == size_of::<AllowRuleKey>());
    assert!(size_of::<AllowKey>() == size_of::<Key<AllowWords>>());
    assert!(size_of::<FlowWords>() == size_of::<FlowKey>());
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a key.
    fn bytes<T>(value: &T) -> &[u8] {
        // SAFETY: only used on the repr(C) key types of this module and of
        // befund_common, which consist of integers without padding, so all
        // `size_of::<T>()` bytes are initialised.
        unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
    }

    const CLIENT: Addr = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
    ];

    #[test]
    fn ipv4_mapped_words_are_the_mapped_address_bytes() {
        let words = ipv4_mapped_words(&[192, 0, 2, 10]);

        let mut expected = [0u8; 16];
        expected[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 10]);
        assert_eq!(bytes(&words), expected);
    }

    #[test]
    fn address_key_has_the_bytes_of_a_trie_key() {
        let key = AddrKey::new(ipv6_words(&CLIENT));

        assert_eq!(bytes(&key)[..4], 128u32.to_ne_bytes());
        assert_eq!(bytes(&key)[4..], CLIENT);
    }

    #[test]
    fn allow_key_has_the_bytes_of_the_shared_allow_rule_key() {
        let source = AddrKey::new(ipv6_words(&CLIENT));
        let key = AllowKey::new(6, 22u16.to_be_bytes(), &source);

        let shared = AllowRuleKey {
            proto: 6,
            reserved: 0,
            port: 22u16.to_be_bytes(),
            source: CLIENT,
        };
        assert_eq!(bytes(&key)[..4], 160u32.to_ne_bytes());
        assert_eq!(bytes(&key)[4..], *bytes(&shared));
    }

    #[test]
    fn flow_words_have_the_bytes_of_the_shared_flow_key() {
        let remote = AddrKey::new(ipv4_mapped_words(&[203, 0, 113, 80]));
        let local = AddrKey::new(ipv6_words(&CLIENT));
        let key = FlowWords::new(
            &remote,
            &local,
            443u16.to_be_bytes(),
            40000u16.to_be_bytes(),
            6,
        );

        let shared = FlowKey {
            remote: {
                let mut a = [0u8; 16];
                a[10..].copy_from_slice(&[0xff, 0xff, 203, 0, 113, 80]);
                a
            },
            local: CLIENT,
            remote_port: 443u16.to_be_bytes(),
            local_port: 40000u16.to_be_bytes(),
            proto: 6,
            reserved: [0; 3],
        };
        assert_eq!(bytes(&key), bytes(&shared));
    }
}
