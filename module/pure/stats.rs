// SPDX-License-Identifier: GPL-2.0

//! The binary statistics file of `KVM_GET_STATS_FD` (api.rst, "KVM_GET_STATS_FD"),
//! laid out byte for byte as KVM lays it out:
//!
//! ```text
//! offset 0            struct kvm_stats_header (6 x u32)
//! id_offset = 24      the id string, name_size (48) bytes, NUL-padded
//! desc_offset = 72    num_desc x (struct kvm_stats_desc (16 bytes) + name[48])
//! data_offset         the values: u64 each, at desc.offset from data_offset
//! ```
//!
//! A reader reads the header and descriptors once and then `pread()`s the
//! data block as often as it likes; the values are read live each time.

/// `KVM_STATS_NAME_SIZE`.
pub const NAME_SIZE: usize = 48;
/// `sizeof(struct kvm_stats_header)`.
pub const HEADER_SIZE: usize = 24;
/// `sizeof(struct kvm_stats_desc)`, without the name.
pub const DESC_SIZE: usize = 16;

/// `KVM_STATS_TYPE_CUMULATIVE`: a counter that only grows.
pub const TYPE_CUMULATIVE: u32 = 0;
/// `KVM_STATS_TYPE_INSTANT`: a value that goes up and down.
pub const TYPE_INSTANT: u32 = 1;
/// `KVM_STATS_TYPE_PEAK`: the highest value seen.
pub const TYPE_PEAK: u32 = 2;
/// `KVM_STATS_UNIT_NONE` (bits 4-7).
pub const UNIT_NONE: u32 = 0 << 4;
/// `KVM_STATS_UNIT_SECONDS`.
pub const UNIT_SECONDS: u32 = 2 << 4;
/// `KVM_STATS_UNIT_CYCLES`.
pub const UNIT_CYCLES: u32 = 3 << 4;
/// `KVM_STATS_BASE_POW10` (bits 8-11).
pub const BASE_POW10: u32 = 0;

/// One statistic: a single u64 (KVM's `size` 1; no histograms here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Its name, as KVM names it (`pages_4k`, `exits`, ...): at most 47 bytes.
    pub name: &'static str,
    /// Type | unit | base.
    pub flags: u32,
    /// The value is value x 10^exponent units (0 for counts, -9 for ns).
    pub exponent: i16,
}

impl Desc {
    /// A counter (`KVM_STATS_TYPE_CUMULATIVE`, no unit).
    pub const fn counter(name: &'static str) -> Desc {
        Desc {
            name,
            flags: TYPE_CUMULATIVE | UNIT_NONE | BASE_POW10,
            exponent: 0,
        }
    }

    /// An instantaneous value (`KVM_STATS_TYPE_INSTANT`, no unit).
    pub const fn instant(name: &'static str) -> Desc {
        Desc {
            name,
            flags: TYPE_INSTANT | UNIT_NONE | BASE_POW10,
            exponent: 0,
        }
    }

    /// A time in nanoseconds, summed (`KVM_STATS_UNIT_SECONDS`, 10^-9).
    pub const fn nanoseconds(name: &'static str) -> Desc {
        Desc {
            name,
            flags: TYPE_CUMULATIVE | UNIT_SECONDS | BASE_POW10,
            exponent: -9,
        }
    }
}

/// The offset of the data block for `n` descriptors.
pub const fn data_offset(n: usize) -> usize {
    HEADER_SIZE + NAME_SIZE + n * (DESC_SIZE + NAME_SIZE)
}

/// The size of the whole file for `n` descriptors.
pub const fn file_size(n: usize) -> usize {
    data_offset(n) + 8 * n
}

/// The id string KVM gives a statistics file: `prefix` followed by `n` in
/// decimal (`kvm-1234`, then `/vcpu-0` appended for a vCPU). Returns the
/// length written into `out`.
pub fn write_id(out: &mut [u8; NAME_SIZE], at: usize, prefix: &[u8], n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut v = n;
    // A u32 has at most 10 digits: `digits` always has room.
    while let Some(d) = digits.get_mut(len) {
        *d = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut end = at;
    let bytes = prefix
        .iter()
        .copied()
        .chain(digits.iter().take(len).rev().copied());
    for b in bytes {
        // Keep the last byte, the NUL.
        match out.get_mut(end) {
            Some(o) if end + 1 < NAME_SIZE => *o = b,
            _ => break,
        }
        end += 1;
    }
    end
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Writes the file for statistics `descs` with `values` (same order) and
/// id string `id` (truncated to 47 bytes) into `out`, which must be
/// [`file_size`] bytes; shorter buffers get what fits.
pub fn render(id: &[u8], descs: &[Desc], values: &[u64], out: &mut [u8]) {
    out.fill(0);
    let n = descs.len();
    let desc_offset = HEADER_SIZE + NAME_SIZE;
    let header = [
        0,
        NAME_SIZE as u32,
        n as u32,
        HEADER_SIZE as u32,
        desc_offset as u32,
        data_offset(n) as u32,
    ];
    for (i, word) in header.iter().enumerate() {
        put(out, 4 * i, &word.to_ne_bytes());
    }
    put(out, HEADER_SIZE, &id[..id.len().min(NAME_SIZE - 1)]);
    for (i, d) in descs.iter().enumerate() {
        let at = desc_offset + i * (DESC_SIZE + NAME_SIZE);
        put(out, at, &d.flags.to_ne_bytes());
        put(out, at + 4, &d.exponent.to_ne_bytes());
        put(out, at + 6, &1u16.to_ne_bytes()); // size: one u64
        put(out, at + 8, &((8 * i) as u32).to_ne_bytes()); // offset in the data block
        put(out, at + 12, &0u32.to_ne_bytes()); // bucket_size
        let name = d.name.as_bytes();
        put(out, at + DESC_SIZE, &name[..name.len().min(NAME_SIZE - 1)]);
    }
    for (i, v) in values.iter().take(n).enumerate() {
        put(out, data_offset(n) + 8 * i, &v.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCS: [Desc; 2] = [Desc::instant("pages_4k"), Desc::nanoseconds("guest_time")];

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn layout_matches_kvm() {
        let mut file = [0u8; file_size(2)];
        render(b"kvm-42", &DESCS, &[7, 1_000], &mut file);
        // Header: flags, name_size, num_desc, id_offset, desc_offset, data_offset.
        let header: [u32; 6] = core::array::from_fn(|i| u32_at(&file, 4 * i));
        assert_eq!(header, [0, 48, 2, 24, 72, 72 + 2 * 64]);
        assert_eq!(&file[24..31], b"kvm-42\0");
        // The second descriptor: flags, exponent, size, offset, bucket_size, name.
        let d = 72 + 64;
        assert_eq!(u32_at(&file, d), TYPE_CUMULATIVE | UNIT_SECONDS);
        assert_eq!(i16::from_ne_bytes([file[d + 4], file[d + 5]]), -9);
        assert_eq!(u16::from_ne_bytes([file[d + 6], file[d + 7]]), 1);
        assert_eq!(u32_at(&file, d + 8), 8);
        assert_eq!(&file[d + 16..d + 27], b"guest_time\0");
        let data = data_offset(2);
        assert_eq!(
            u64::from_ne_bytes(file[data..data + 8].try_into().unwrap()),
            7
        );
        assert_eq!(
            u64::from_ne_bytes(file[data + 8..data + 16].try_into().unwrap()),
            1_000
        );
        assert_eq!(file.len(), data + 16);
    }

    #[test]
    fn ids_as_kvm_writes_them() {
        let mut id = [0u8; NAME_SIZE];
        let n = write_id(&mut id, 0, b"kvm-", 1234);
        assert_eq!(&id[..n], b"kvm-1234");
        let n = write_id(&mut id, n, b"/vcpu-", 0);
        assert_eq!(&id[..n], b"kvm-1234/vcpu-0");
        let n = write_id(&mut id, 40, b"/vcpu-", u32::MAX);
        assert_eq!(n, 47, "cut before the last byte, which stays NUL");
        assert_eq!(id[47], 0);
    }

    #[test]
    fn long_names_and_short_buffers_are_cut() {
        let long = Desc::counter("a_name_that_is_much_longer_than_forty_seven_bytes_in_all");
        let mut file = [0xffu8; file_size(1)];
        render(&[b'x'; 100], &[long], &[1], &mut file);
        assert_eq!(file[24 + 47], 0, "the id stays NUL-terminated");
        assert_eq!(file[72 + 16 + 47], 0, "so does the name");
        let mut short = [0u8; 10];
        render(b"kvm-1", &DESCS, &[1, 2], &mut short); // must not panic
        assert_eq!(u32_at(&short, 4), 48);
    }
}
