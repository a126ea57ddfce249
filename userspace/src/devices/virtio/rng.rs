// SPDX-License-Identifier: GPL-2.0

//! virtio-rng (virtio 1.2, section 5.4): the guest's buffers filled from
//! the host's `/dev/urandom`.

use std::io::{Read, Write};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::{serve_chains, Malformed, VirtioDevice};

/// Device ID.
const ENTROPY: u32 = 4;
const QUEUE_SIZE: [u16; 1] = [64];
/// The most one request gets.
const MAX_REQUEST: usize = 4096;

/// An entropy source.
pub struct Rng<R: Read> {
    source: R,
    /// Bytes handed out, for the run's summary.
    pub bytes: u64,
}

impl<R: Read> Rng<R> {
    pub fn new(source: R) -> Self {
        Rng { source, bytes: 0 }
    }
}

impl<R: Read> VirtioDevice for Rng<R> {
    fn device_type(&self) -> u32 {
        ENTROPY
    }

    fn queue_sizes(&self) -> &[u16] {
        &QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Malformed> {
        serve_chains(queue, mem, |chain| {
            let mut writer = chain
                .clone()
                .writer(mem)
                .map_err(|e| Malformed(format!("virtio-rng: buffers: {e}")))?;
            let n = writer.available_bytes().min(MAX_REQUEST);
            let mut buf = vec![0u8; n];
            // A source that fails gives nothing: an empty answer, not an error.
            if self.source.read_exact(&mut buf).is_err() || writer.write_all(&buf).is_err() {
                return Ok(0);
            }
            self.bytes += n as u64;
            Ok(n as u32)
        })
    }

    fn summary(&self) -> String {
        format!("virtio-rng: {} bytes", self.bytes)
    }
}
