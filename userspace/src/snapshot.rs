// SPDX-License-Identifier: GPL-2.0

//! The file `rkvm run --save` writes and `--restore` reads: a saved guest.
//!
//! Layout, little-endian:
//!
//! ```text
//! "RKVMSNAP"  u32 version (1)  u32 0
//! then sections until the end of the file:
//!     [u8; 4] tag   u64 length   length bytes
//! ```
//!
//! The KVM state sections hold the `<linux/kvm.h>` structs byte for byte,
//! as `KVM_GET_*` returned them: the ABI that /dev/kvm and /dev/rkvm share,
//! so a guest saved through one device resumes through the other. The
//! devices' sections use [`Enc`]/[`Dec`], fields in a fixed order. A reader
//! refuses a file with another magic or version, a section cut short, and
//! a section it needs but does not find, naming what is wrong.

use std::collections::BTreeMap;

/// The first eight bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"RKVMSNAP";
/// The format this code writes and reads.
pub const VERSION: u32 = 1;

/// What is wrong with a snapshot file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not an rkvm snapshot (no RKVMSNAP at its start)")]
    Magic,
    #[error("snapshot format version {0}; this rkvm reads version {VERSION}")]
    Version(u32),
    #[error("the snapshot ends inside {0}")]
    Truncated(String),
    #[error("the snapshot has no {0} section")]
    Missing(String),
    #[error("section {tag} appears twice")]
    Duplicate { tag: String },
    #[error("section {tag}: {what}")]
    Bad { tag: String, what: String },
}

/// A 4-byte section tag, shown as text.
pub type Tag = [u8; 4];

pub fn tag_name(tag: &Tag) -> String {
    String::from_utf8_lossy(tag).trim_end().to_string()
}

/// A snapshot being written: sections appended in order.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        Writer { out }
    }

    pub fn section(&mut self, tag: &Tag, payload: &[u8]) {
        self.out.extend_from_slice(tag);
        self.out
            .extend_from_slice(&(payload.len() as u64).to_le_bytes());
        self.out.extend_from_slice(payload);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

/// A snapshot read: its sections by tag.
pub struct Reader<'a> {
    sections: BTreeMap<Tag, &'a [u8]>,
}

impl<'a> Reader<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut d = Dec::new(bytes, "the header");
        if d.bytes(8).map_err(|_| FormatError::Magic)? != MAGIC {
            return Err(FormatError::Magic);
        }
        let version = d.u32()?;
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        d.u32()?;
        let mut sections = BTreeMap::new();
        while !d.is_empty() {
            d.what = "a section header".into();
            let tag: Tag = d.array()?;
            let len = d.u64()?;
            d.what = format!("section {}", tag_name(&tag));
            let len = usize::try_from(len).map_err(|_| FormatError::Truncated(d.what.clone()))?;
            let payload = d.bytes(len)?;
            if sections.insert(tag, payload).is_some() {
                return Err(FormatError::Duplicate {
                    tag: tag_name(&tag),
                });
            }
        }
        Ok(Reader { sections })
    }

    /// A section that must be there.
    pub fn get(&self, tag: &Tag) -> Result<&'a [u8], FormatError> {
        self.sections
            .get(tag)
            .copied()
            .ok_or_else(|| FormatError::Missing(tag_name(tag)))
    }

    /// A section that may be missing.
    pub fn optional(&self, tag: &Tag) -> Option<&'a [u8]> {
        self.sections.get(tag).copied()
    }

    /// A section that holds exactly one `T` (a `<linux/kvm.h>` struct).
    pub fn get_struct<T: zerocopy::FromBytes>(&self, tag: &Tag) -> Result<T, FormatError> {
        struct_from(tag, self.get(tag)?)
    }

    /// A section that holds a whole number of `T`s.
    pub fn get_structs<T: zerocopy::FromBytes>(&self, tag: &Tag) -> Result<Vec<T>, FormatError> {
        let bytes = self.get(tag)?;
        let size = size_of::<T>();
        if size == 0 || bytes.len() % size != 0 {
            return Err(bad(
                tag,
                format!("{} bytes, not a multiple of {size}", bytes.len()),
            ));
        }
        bytes.chunks(size).map(|c| struct_from(tag, c)).collect()
    }
}

fn struct_from<T: zerocopy::FromBytes>(tag: &Tag, bytes: &[u8]) -> Result<T, FormatError> {
    T::read_from_bytes(bytes).map_err(|_| {
        bad(
            tag,
            format!(
                "{} bytes where {} were expected",
                bytes.len(),
                size_of::<T>()
            ),
        )
    })
}

pub fn bad(tag: &Tag, what: impl Into<String>) -> FormatError {
    FormatError::Bad {
        tag: tag_name(tag),
        what: what.into(),
    }
}

/// A device's state as bytes: fields appended in order.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A length (u32) and the bytes.
    pub fn blob(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32).bytes(v)
    }
}

/// Reads what [`Enc`] wrote, in the same order; every read says what it
/// was reading when the bytes ran out.
pub struct Dec<'a> {
    rest: &'a [u8],
    what: String,
}

impl<'a> Dec<'a> {
    pub fn new(bytes: &'a [u8], what: impl Into<String>) -> Self {
        Dec {
            rest: bytes,
            what: what.into(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.rest.len() < n {
            return Err(FormatError::Truncated(self.what.clone()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    /// A bool: 0 or 1, anything else is an error.
    pub fn bool(&mut self) -> Result<bool, FormatError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(FormatError::Bad {
                tag: self.what.clone(),
                what: format!("{v} where a flag (0 or 1) was expected"),
            }),
        }
    }
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// What [`Enc::blob`] wrote.
    pub fn blob(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
    /// The end of a device's state: nothing may be left over.
    pub fn end(&self) -> Result<(), FormatError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FormatError::Bad {
                tag: self.what.clone(),
                what: format!("{} bytes left over", self.rest.len()),
            })
        }
    }
}

/// Guest memory as sections hold it: the pages that are not all zero,
/// each as its guest physical address and its 4 KiB.
pub const PAGE: usize = 4096;

/// Guest memory of `size` bytes (a whole number of pages), read a page at
/// a time by `read` (its guest physical address, the buffer to fill).
pub fn encode_pages<E>(
    size: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut out = Enc::default();
    out.u64(size);
    let mut page = [0u8; PAGE];
    for gpa in (0..size).step_by(PAGE) {
        read(gpa, &mut page)?;
        if page.iter().any(|&b| b != 0) {
            out.u64(gpa).bytes(&page);
        }
    }
    Ok(out.0)
}

/// The pages [`encode_pages`] wrote, each with its guest physical address,
/// for guest memory of `size` bytes (the size saved must be the same);
/// a page outside it is an error. The pages not listed are all zero.
pub fn decode_pages<'a>(
    tag: &Tag,
    bytes: &'a [u8],
    size: u64,
) -> Result<Vec<(u64, &'a [u8])>, FormatError> {
    let mut d = Dec::new(bytes, tag_name(tag));
    let saved = d.u64()?;
    if saved != size {
        return Err(bad(
            tag,
            format!("{saved} bytes of guest memory, the VM has {size}"),
        ));
    }
    let mut pages = Vec::new();
    while !d.is_empty() {
        let gpa = d.u64()?;
        let page = d.bytes(PAGE)?;
        let inside =
            gpa % PAGE as u64 == 0 && gpa.checked_add(PAGE as u64).is_some_and(|end| end <= size);
        if !inside {
            return Err(bad(
                tag,
                format!("page at {gpa:#x} is outside the guest's memory"),
            ));
        }
        pages.push((gpa, page));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_and_missing_ones_are_named() {
        let mut w = Writer::new();
        w.section(b"REGS", &[1, 2, 3]);
        w.section(b"PIC ", &[]);
        let bytes = w.into_bytes();
        let r = Reader::parse(&bytes).unwrap();
        assert_eq!(r.get(b"REGS").unwrap(), &[1, 2, 3]);
        assert_eq!(r.get(b"PIC ").unwrap(), &[] as &[u8]);
        assert_eq!(
            r.get(b"PIT ").unwrap_err().to_string(),
            "the snapshot has no PIT section"
        );
        assert!(r.optional(b"XSAV").is_none());
    }

    #[test]
    fn bad_files_are_refused_saying_why() {
        assert_eq!(Reader::parse(b"ELF").err(), Some(FormatError::Magic));
        let mut v = Writer::new().into_bytes();
        v[8] = 2;
        assert_eq!(Reader::parse(&v).err(), Some(FormatError::Version(2)));
        let mut w = Writer::new();
        w.section(b"MEM ", &[0; 16]);
        let mut bytes = w.into_bytes();
        bytes.truncate(bytes.len() - 1);
        assert_eq!(
            Reader::parse(&bytes).err(),
            Some(FormatError::Truncated("section MEM".into()))
        );
        let mut w = Writer::new();
        w.section(b"REGS", &[]);
        w.section(b"REGS", &[]);
        assert!(matches!(
            Reader::parse(&w.into_bytes()),
            Err(FormatError::Duplicate { .. })
        ));
    }

    #[test]
    fn structs_are_checked_for_size() {
        let mut w = Writer::new();
        w.section(b"A   ", &7u64.to_le_bytes());
        w.section(b"B   ", &[0; 12]);
        let bytes = w.into_bytes();
        let r = Reader::parse(&bytes).unwrap();
        assert_eq!(r.get_struct::<u64>(b"A   ").unwrap(), 7);
        assert!(r.get_struct::<u64>(b"B   ").is_err());
        assert_eq!(r.get_structs::<u32>(b"B   ").unwrap(), vec![0, 0, 0]);
        assert!(r.get_structs::<u64>(b"B   ").is_err());
    }

    #[test]
    fn fields_round_trip_and_leftovers_are_errors() {
        let mut e = Enc::default();
        e.u8(1)
            .bool(true)
            .u16(0x1234)
            .u32(5)
            .u64(u64::MAX)
            .blob(b"abc");
        let mut d = Dec::new(&e.0, "test");
        assert_eq!(d.u8().unwrap(), 1);
        assert!(d.bool().unwrap());
        assert_eq!(d.u16().unwrap(), 0x1234);
        assert_eq!(d.u32().unwrap(), 5);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.blob().unwrap(), b"abc");
        d.end().unwrap();
        assert!(d.u8().is_err());
        let mut d = Dec::new(&[2], "flag");
        assert!(d.bool().is_err());
        assert!(Dec::new(&[0], "x").end().is_err());
    }

    #[test]
    fn memory_keeps_only_nonzero_pages() {
        let mut mem = vec![0u8; 4 * PAGE];
        mem[PAGE + 5] = 9;
        mem[3 * PAGE] = 1;
        let read = |gpa: u64, buf: &mut [u8]| -> Result<(), ()> {
            let at = gpa as usize;
            buf.copy_from_slice(&mem[at..at + PAGE]);
            Ok(())
        };
        let enc = encode_pages(mem.len() as u64, read).unwrap();
        assert_eq!(enc.len(), 8 + 2 * (8 + PAGE));
        let mut back = vec![0u8; 4 * PAGE];
        for (gpa, page) in decode_pages(b"MEM ", &enc, back.len() as u64).unwrap() {
            back[gpa as usize..gpa as usize + PAGE].copy_from_slice(page);
        }
        assert_eq!(back, mem);
        assert!(decode_pages(b"MEM ", &enc, 2 * PAGE as u64).is_err());
        assert_eq!(encode_pages(mem.len() as u64, |_, _| Err(7)), Err(7));
        // A page address near the top of the address space is refused, not
        // wrapped around.
        let mut far = Enc::default();
        far.u64(4 * PAGE as u64)
            .u64(!(PAGE as u64 - 1))
            .bytes(&[1; PAGE]);
        assert!(decode_pages(b"MEM ", &far.0, 4 * PAGE as u64).is_err());
    }
}
