// SPDX-License-Identifier: GPL-2.0

//! virtio-blk (virtio 1.2, section 5.2): a disk backed by a host file,
//! read-write or read-only.
//!
//! Each request is one descriptor chain: a 16-byte header (type, sector)
//! the device reads, the data (read for a write request, written for a
//! read), and one status byte the device writes. Writes go straight to the
//! file; a flush request (sent by Linux on sync and at shutdown) makes them
//! durable with fsync.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestMemoryMmap;

use super::{serve_chains, Malformed, VirtioDevice};

/// Device ID.
const BLOCK: u32 = 2;
/// Sector size of the protocol.
pub const SECTOR: u64 = 512;
/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// Status values.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Feature bits.
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
/// Queue size.
const QUEUE_SIZE: [u16; 1] = [256];
/// Bytes moved between the file and guest memory at a time.
const CHUNK: usize = 64 * 1024;

/// What the disk served, for the run's summary.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkStats {
    /// Read requests and bytes.
    pub reads: u64,
    pub read_bytes: u64,
    /// Write requests and bytes.
    pub writes: u64,
    pub written_bytes: u64,
    /// Flushes.
    pub flushes: u64,
    /// Requests answered with an error status.
    pub errors: u64,
}

/// A disk.
pub struct Blk {
    file: File,
    sectors: u64,
    read_only: bool,
    /// The serial number `GET_ID` answers (20 bytes, NUL-padded).
    id: [u8; 20],
    pub stats: BlkStats,
}

impl Blk {
    /// A disk over `file` (its size rounded down to whole sectors).
    pub fn new(file: File, read_only: bool, id: &str) -> std::io::Result<Self> {
        let sectors = file.metadata()?.len() / SECTOR;
        let mut serial = [0u8; 20];
        let n = id.len().min(20);
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Blk {
            file,
            sectors,
            read_only,
            id: serial,
            stats: BlkStats::default(),
        })
    }

    /// One request; returns the bytes written into the chain (data and
    /// status).
    fn request(
        &mut self,
        chain: &DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, Malformed> {
        let bad = |what: &str| Malformed(format!("virtio-blk: {what}"));
        let mut reader = chain
            .clone()
            .reader(mem)
            .map_err(|e| bad(&format!("request buffers: {e}")))?;
        let mut writer = chain
            .clone()
            .writer(mem)
            .map_err(|e| bad(&format!("request buffers: {e}")))?;
        let mut header = [0u8; 16];
        reader
            .read_exact(&mut header)
            .map_err(|_| bad("request without a 16-byte header"))?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let data_len = writer
            .available_bytes()
            .checked_sub(1)
            .ok_or_else(|| bad("request without a status byte"))?;
        let mut status_writer = writer
            .split_at(data_len)
            .map_err(|e| bad(&format!("status byte: {e}")))?;
        let (status, written) = match kind {
            T_IN => self.read(sector, &mut writer, data_len),
            T_OUT if self.read_only => (S_IOERR, 0),
            T_OUT => (self.write(sector, &mut reader), 0),
            T_FLUSH => {
                self.stats.flushes += 1;
                (
                    if self.file.sync_all().is_ok() {
                        S_OK
                    } else {
                        S_IOERR
                    },
                    0,
                )
            }
            T_GET_ID => {
                let n = data_len.min(self.id.len());
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => (S_OK, n),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        };
        if status != S_OK {
            self.stats.errors += 1;
        }
        status_writer
            .write_all(&[status])
            .map_err(|_| bad("status byte not writable"))?;
        Ok(written as u32 + 1)
    }

    /// Whether a transfer of `len` bytes from `sector` is whole sectors on
    /// the disk.
    fn valid(&self, sector: u64, len: usize) -> bool {
        let len = len as u64;
        len.is_multiple_of(SECTOR)
            && sector
                .checked_mul(SECTOR)
                .and_then(|start| start.checked_add(len))
                .is_some_and(|end| end <= self.sectors * SECTOR)
    }

    fn read(&mut self, sector: u64, writer: &mut impl Write, len: usize) -> (u8, usize) {
        if !self.valid(sector, len) {
            return (S_IOERR, 0);
        }
        let mut buf = vec![0u8; len.min(CHUNK)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let at = sector * SECTOR + done as u64;
            if self.file.read_exact_at(&mut buf[..n], at).is_err()
                || writer.write_all(&buf[..n]).is_err()
            {
                return (S_IOERR, done);
            }
            done += n;
        }
        self.stats.reads += 1;
        self.stats.read_bytes += len as u64;
        (S_OK, len)
    }

    fn write(&mut self, sector: u64, reader: &mut virtio_queue::Reader<'_>) -> u8 {
        let len = reader.available_bytes();
        if !self.valid(sector, len) {
            return S_IOERR;
        }
        let mut buf = vec![0u8; len.min(CHUNK)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let at = sector * SECTOR + done as u64;
            if reader.read_exact(&mut buf[..n]).is_err()
                || self.file.write_all_at(&buf[..n], at).is_err()
            {
                return S_IOERR;
            }
            done += n;
        }
        self.stats.writes += 1;
        self.stats.written_bytes += len as u64;
        S_OK
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u32 {
        BLOCK
    }

    fn queue_sizes(&self) -> &[u16] {
        &QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        F_FLUSH | if self.read_only { F_RO } else { 0 }
    }

    /// `capacity` (8 bytes, in sectors) is the only field offered.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let capacity = self.sectors.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = capacity.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn process(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Malformed> {
        serve_chains(queue, mem, |chain| self.request(chain, mem))
    }

    fn summary(&self) -> String {
        let s = self.stats;
        format!(
            "virtio-blk{}: {} reads ({} KiB), {} writes ({} KiB), {} flushes, {} errors",
            if self.read_only { " (read-only)" } else { "" },
            s.reads,
            s.read_bytes / 1024,
            s.writes,
            s.written_bytes / 1024,
            s.flushes,
            s.errors
        )
    }
}
