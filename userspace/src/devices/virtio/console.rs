// SPDX-License-Identifier: GPL-2.0

//! virtio-console (virtio 1.2, section 5.3), one port, no multiport: Linux's
//! `hvc0`. Queue 0 (receive) takes input for the guest, queue 1 (transmit)
//! brings its output; a whole buffer moves per exit, where the 16550 costs
//! two exits per byte.

use std::collections::VecDeque;
use std::io::{Read, Write};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{serve_chains, Malformed, VirtioDevice};

/// Device ID.
const CONSOLE: u32 = 3;
const RECEIVE: usize = 0;
const TRANSMIT: usize = 1;
const QUEUE_SIZES: [u16; 2] = [64, 64];
/// Input held for the guest before more is refused.
const INPUT_LIMIT: usize = 4096;

/// A console writing what the guest sends to `out`.
pub struct Console<W: Write> {
    out: W,
    input: VecDeque<u8>,
    /// Bytes the guest sent, for the run's summary.
    pub sent: u64,
}

impl<W: Write> Console<W> {
    pub fn new(out: W) -> Self {
        Console {
            out,
            input: VecDeque::new(),
            sent: 0,
        }
    }

    /// Moves pending input into the guest's receive buffers.
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Malformed> {
        let mut used = false;
        while !self.input.is_empty() {
            // Only as many chains as there is input for: the rest stay
            // available for later input.
            let Some(chain) = queue
                .iter(mem)
                .map_err(|e| Malformed(format!("virtio-console: {e}")))?
                .next()
            else {
                break;
            };
            let head = chain.head_index();
            let mut writer = chain
                .writer(mem)
                .map_err(|e| Malformed(format!("virtio-console: buffers: {e}")))?;
            let n = writer.available_bytes().min(self.input.len());
            let bytes: Vec<u8> = self.input.drain(..n).collect();
            writer
                .write_all(&bytes)
                .map_err(|e| Malformed(format!("virtio-console: buffers: {e}")))?;
            queue
                .add_used(mem, head, n as u32)
                .map_err(|e| Malformed(format!("virtio-console: {e}")))?;
            used = true;
        }
        Ok(used)
    }
}

impl<W: Write> VirtioDevice for Console<W> {
    fn device_type(&self) -> u32 {
        CONSOLE
    }

    fn queue_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        0
    }

    /// No size, multiport or emergency-write feature: nothing to read.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Malformed> {
        match index {
            TRANSMIT => {
                let used = serve_chains(queue, mem, |chain| {
                    let mut reader = chain
                        .clone()
                        .reader(mem)
                        .map_err(|e| Malformed(format!("virtio-console: buffers: {e}")))?;
                    let mut bytes = Vec::with_capacity(reader.available_bytes());
                    reader
                        .read_to_end(&mut bytes)
                        .map_err(|e| Malformed(format!("virtio-console: {e}")))?;
                    self.sent += bytes.len() as u64;
                    // Output that cannot be written is dropped, as a
                    // terminal that went away drops it.
                    let _ = self.out.write_all(&bytes);
                    Ok(0)
                })?;
                let _ = self.out.flush();
                Ok(used)
            }
            RECEIVE => self.deliver(queue, mem),
            _ => Ok(false),
        }
    }

    fn poll(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> Result<bool, Malformed> {
        match queues.get_mut(RECEIVE) {
            Some(q) if q.ready() && !self.input.is_empty() => self.deliver(q, mem),
            _ => Ok(false),
        }
    }

    fn receive(&mut self, bytes: &[u8]) -> usize {
        let n = bytes
            .len()
            .min(INPUT_LIMIT.saturating_sub(self.input.len()));
        self.input.extend(&bytes[..n]);
        n
    }

    fn summary(&self) -> String {
        format!("virtio-console: {} bytes from the guest", self.sent)
    }

    fn reset(&mut self) {
        self.input.clear();
    }
}
