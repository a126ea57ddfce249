// SPDX-License-Identifier: GPL-2.0

//! The input side of the guest's console: what is typed (or piped) into
//! `rkvm run`'s standard input reaches the guest's COM1 receive FIFO.
//!
//! A thread reads stdin and hands the bytes over through a channel, then
//! wakes the vCPU thread with a signal (`KVM_RUN` returns `EINTR`, see
//! `crate::signals`); the run loop moves the bytes into the UART as its 64-byte
//! FIFO takes them. A terminal is switched to raw input for the run (every
//! key goes to the guest at once, unechoed: the guest's tty echoes) and
//! restored when the run ends, however it ends. Ctrl-C stays a signal: it
//! stops the run.

use std::collections::VecDeque;
use std::io::{Read, Stdin};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, TryRecvError};

use nix::sys::signal::SigSet;
use nix::sys::termios::{self, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

/// Guest console input.
pub struct Input {
    rx: Receiver<Vec<u8>>,
    /// Bytes received but not yet taken by the UART.
    pending: VecDeque<u8>,
    /// The reader has not reached end of file.
    open: bool,
    _raw: Option<RawInput>,
}

impl Input {
    /// Reads `reader` on a new thread, calling `wake` after each chunk and
    /// at end of file. The thread blocks every signal, so that the signals
    /// meant to interrupt `KVM_RUN` always reach the vCPU thread.
    pub fn spawn<R, W>(mut reader: R, wake: W) -> Input
    where
        R: Read + Send + 'static,
        W: Fn() + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Failing to block only means a signal may land here instead;
            // the vCPU thread still sees it on its next exit.
            let _ = SigSet::all().thread_block();
            let mut buf = [0u8; 256];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return; // the run is over
                        }
                        wake();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            drop(tx);
            wake();
        });
        Input {
            rx,
            pending: VecDeque::new(),
            open: true,
            _raw: None,
        }
    }

    /// Standard input, with a terminal switched to raw input until `self`
    /// is dropped.
    pub fn stdin<W: Fn() + Send + 'static>(wake: W) -> Input {
        let raw = RawInput::enable(std::io::stdin());
        Input {
            _raw: raw,
            ..Input::spawn(std::io::stdin(), wake)
        }
    }

    /// Offers what has arrived to `take`, which accepts a prefix of the
    /// bytes and returns how many (the room in the UART's FIFO).
    pub fn feed(&mut self, mut take: impl FnMut(&[u8]) -> usize) {
        loop {
            match self.rx.try_recv() {
                Ok(chunk) => self.pending.extend(chunk),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    break;
                }
            }
        }
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            let n = take(front).min(front.len());
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
        }
    }

    /// Whether more input may still come (or is waiting for room).
    pub fn may_have_more(&self) -> bool {
        self.open || !self.pending.is_empty()
    }
}

/// A terminal in raw input mode; the old settings come back on drop.
struct RawInput {
    tty: Stdin,
    saved: Termios,
}

impl RawInput {
    /// Raw input on `fd` if it is a terminal: no line editing, no echo, no
    /// CR-to-NL translation, no flow control; signals (Ctrl-C) and output
    /// processing (our own messages still end lines properly) stay.
    fn enable(tty: Stdin) -> Option<RawInput> {
        let saved = termios::tcgetattr(tty.as_fd()).ok()?; // not a terminal
        let mut raw = saved.clone();
        raw.local_flags.remove(
            LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::IEXTEN,
        );
        raw.input_flags.remove(
            InputFlags::ICRNL
                | InputFlags::INLCR
                | InputFlags::IGNCR
                | InputFlags::IXON
                | InputFlags::ISTRIP,
        );
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(tty.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawInput { tty, saved })
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal went away.
        let _ = termios::tcsetattr(self.tty.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A guard against a hang, not a speed limit: the reader thread needs
    /// milliseconds, even on a busy machine.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    /// Feeds until the reader is done, into a FIFO of `room` bytes per call.
    fn drain(input: &mut Input, room: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let deadline = Instant::now() + HANG_GUARD;
        while input.may_have_more() && Instant::now() < deadline {
            input.feed(|b| {
                let n = b.len().min(room);
                got.extend_from_slice(&b[..n]);
                n
            });
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn bytes_arrive_in_order_and_eof_closes() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut input = Input::spawn(std::io::Cursor::new(data.clone()), move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            drain(&mut input, 16),
            data,
            "all bytes, in order, through a 16-byte FIFO"
        );
        assert!(!input.may_have_more());
        assert!(
            wakes.load(Ordering::SeqCst) >= 2,
            "woken for data and for end of file"
        );
    }

    #[test]
    fn a_full_fifo_keeps_bytes_pending() {
        let mut input = Input::spawn(std::io::Cursor::new(b"abc".to_vec()), || {});
        let deadline = Instant::now() + HANG_GUARD;
        while input.pending.is_empty() && Instant::now() < deadline {
            input.feed(|_| 0);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(input.may_have_more(), "nothing taken: still pending");
        assert_eq!(drain(&mut input, 1), b"abc");
    }
}
