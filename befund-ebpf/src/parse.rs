//! Bounds-checked views of packet headers.
//!
//! [`Packet::header`] is the only place in the filter where a pointer into
//! packet memory is made. Everything else works on the references it returns
//! and on plain offsets.

use core::{marker::PhantomData, mem::size_of};

/// The frame cannot be classified: a header is cut short, inconsistent with
/// its length fields, or of a kind the filter refuses to look behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unparseable;

/// A header layout that may be viewed in place in packet memory.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, have alignment 1 and be valid for every
/// bit pattern: they consist of `u8` and byte arrays only. Packet memory has
/// no alignment guarantee and holds whatever the sender put there.
pub unsafe trait Header {}

/// One frame: the bytes the program may read, from the Ethernet header on,
/// and the frame's full length.
///
/// The two differ for socket buffers on the egress path, where only the
/// headers need to be in the directly readable (linear) part.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    start: usize,
    end: usize,
    len: usize,
    _bytes: PhantomData<&'a [u8]>,
}

impl<'a> Packet<'a> {
    /// A view of a frame of `len` bytes whose first bytes are readable
    /// between the addresses `start` and `end`.
    ///
    /// # Safety
    ///
    /// `start..end` must be readable memory for `'a`, as the kernel guarantees
    /// for `data..data_end` of an XDP or TC context while the program runs.
    #[inline(always)]
    pub unsafe fn new(start: usize, end: usize, len: usize) -> Self {
        Self {
            start,
            end,
            len,
            _bytes: PhantomData,
        }
    }

    /// Length of the whole frame in bytes, readable or not.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// A view of a byte slice, for unit tests on the host.
    #[cfg(test)]
    pub fn from_slice(bytes: &'a [u8]) -> Self {
        let start = bytes.as_ptr() as usize;
        // SAFETY: the slice is borrowed for `'a`, and `start..start + len`
        // is exactly its memory.
        unsafe { Self::new(start, start + bytes.len(), bytes.len()) }
    }

    /// The header of type `T` at `offset` bytes from the start of the frame.
    ///
    /// # Errors
    ///
    /// [`Unparseable`] when the frame ends before the whole header.
    #[inline(always)]
    pub fn header<T: Header>(&self, offset: usize) -> Result<&'a T, Unparseable> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return Err(Unparseable);
        }
        // SAFETY: `at..at + size_of::<T>()` lies inside `start..end`, which
        // `Packet::new`'s contract makes readable for `'a`; `T: Header` has
        // alignment 1 and accepts any bytes, so the reference is valid.
        Ok(unsafe { &*(at as *const T) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{EthHdr, VlanHdr};

    #[test]
    fn header_that_fits_exactly_is_returned() {
        let bytes = [0u8; 18];
        let pkt = Packet::from_slice(&bytes);

        assert!(pkt.header::<EthHdr>(0).is_ok());
        assert!(pkt.header::<VlanHdr>(14).is_ok());
        assert_eq!(pkt.len(), 18);
    }

    #[test]
    fn header_one_byte_past_the_end_is_unparseable() {
        let bytes = [0u8; 17];
        let pkt = Packet::from_slice(&bytes);

        assert_eq!(pkt.header::<VlanHdr>(14).err(), Some(Unparseable));
    }
}
