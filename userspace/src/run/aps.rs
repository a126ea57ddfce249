// SPDX-License-Identifier: GPL-2.0

//! The application processors of `rkvm run --smp N` (with `--irqchip
//! kernel` or `split`): vCPUs 1 to N-1, each `KVM_RUN` on a thread of its own. They
//! start as KVM leaves them, waiting in the kernel for the INIT and SIPI
//! the guest's BSP sends through its local APIC (`KVM_RUN` returns EAGAIN
//! once they came: it is called again).
//!
//! The devices belong to the main thread (vCPU 0's, which owns the
//! board): an AP's I/O or MMIO exit becomes a [`Request`] on a channel, the
//! main thread is woken out of `KVM_RUN` (the input signal), serves it
//! between two of its entries and answers; the AP waits for the answer,
//! then enters again. The "big lock" of a VMM, as a message.

use std::os::unix::thread::JoinHandleExt;
use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use nix::sys::pthread::{pthread_kill, Pthread};
use nix::sys::signal::Signal;

use crate::signals;

/// What an AP asks of the main thread.
pub enum Request {
    /// A port write; answered with nothing.
    IoOut(u16, Vec<u8>, SyncSender<Vec<u8>>),
    /// A port read of this many bytes; answered with them.
    IoIn(u16, usize, SyncSender<Vec<u8>>),
    /// An MMIO write; answered with nothing.
    MmioWrite(u64, Vec<u8>, SyncSender<Vec<u8>>),
    /// An MMIO read of this many bytes; answered with them.
    MmioRead(u64, usize, SyncSender<Vec<u8>>),
    /// The AP's EOI of a vector of rkvm run's IOAPIC (`--irqchip split`);
    /// answered with nothing.
    IoapicEoi(u8, u8, SyncSender<Vec<u8>>),
    /// The AP's vCPU shut down (a triple fault): the run is over.
    Shutdown(u8),
    /// The AP stopped on something it cannot go on from.
    Failed(u8, String),
}

/// One AP's thread.
struct Ap {
    thread: JoinHandle<VcpuFd>,
    /// Its `kvm_run`, alive while its `VcpuFd` is (the thread gives it back
    /// when it ends, and it is only dropped after the join).
    run: *mut kvm_run,
}

/// The APs of a run.
pub struct Aps {
    aps: Vec<Ap>,
    stop: Arc<AtomicBool>,
}

impl Aps {
    /// Starts a thread for each vCPU of `vcpus` (ids from 1); their
    /// requests come on the receiver.
    pub fn start(vcpus: Vec<VcpuFd>) -> (Aps, Receiver<Request>) {
        let (tx, requests) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let aps = vcpus
            .into_iter()
            .enumerate()
            .map(|(i, mut vcpu)| {
                let run: *mut kvm_run = vcpu.get_kvm_run();
                let (tx, stop) = (tx.clone(), stop.clone());
                let id = u8::try_from(i + 1).unwrap_or(u8::MAX);
                let thread = std::thread::spawn(move || {
                    ap_loop(&mut vcpu, id, &tx, &stop);
                    vcpu
                });
                Ap { thread, run }
            })
            .collect();
        (Aps { aps, stop }, requests)
    }

    /// Stops every AP (out of `KVM_RUN` with `immediate_exit` and a
    /// signal, as the BSP is) and waits for their threads. The requests
    /// not served go first: an AP waiting for an answer then gets none
    /// (its answer channel closes), sees the stop and ends. Joined with
    /// them still queued, such an AP waited for ever, and so did the
    /// join: rkvm run hung after vCPU 0 failed while vCPU 1 was writing to
    /// the console (found through a VMCB that lost its state under QEMU,
    /// 2026-12-08; the runner's `*:smp_stop` tests).
    pub fn stop(self, requests: Option<Receiver<Request>>) {
        drop(requests);
        self.stop.store(true, Ordering::SeqCst);
        for ap in self.aps {
            // The pthread of a thread not yet joined.
            let pthread: Pthread = ap.thread.as_pthread_t();
            // SAFETY: the AP's `VcpuFd`, whose mapping `run` is, lives
            // until the join below returns it; one volatile byte store,
            // which KVM reads at its next `KVM_RUN`.
            unsafe { addr_of_mut!((*ap.run).immediate_exit).write_volatile(1) };
            let _ = pthread_kill(pthread, Signal::SIGUSR1);
            let _ = ap.thread.join();
        }
    }
}

/// Sends `make(answer channel)` to the main thread, wakes it, and waits for
/// the answer (empty if the main thread is gone).
fn ask(tx: &Sender<Request>, make: impl FnOnce(SyncSender<Vec<u8>>) -> Request) -> Vec<u8> {
    let (answer_tx, answer) = mpsc::sync_channel(1);
    if tx.send(make(answer_tx)).is_err() {
        return Vec::new();
    }
    signals::wake_vcpu();
    answer.recv().unwrap_or_default()
}

/// An AP's `KVM_RUN` loop until the run stops or the AP cannot go on.
fn ap_loop(vcpu: &mut VcpuFd, id: u8, tx: &Sender<Request>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let data = data.to_vec();
                ask(tx, |a| Request::IoOut(port, data, a));
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                let answer = ask(tx, |a| Request::IoIn(port, data.len(), a));
                let n = answer.len().min(data.len());
                data[..n].copy_from_slice(&answer[..n]);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let data = data.to_vec();
                ask(tx, |a| Request::MmioWrite(addr, data, a));
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let answer = ask(tx, |a| Request::MmioRead(addr, data.len(), a));
                let n = answer.len().min(data.len());
                data[..n].copy_from_slice(&answer[..n]);
            }
            Ok(VcpuExit::IoapicEoi(vector)) => {
                ask(tx, |a| Request::IoapicEoi(id, vector, a));
            }
            Ok(VcpuExit::Shutdown) => {
                let _ = tx.send(Request::Shutdown(id));
                signals::wake_vcpu();
                return;
            }
            // A signal or the stop: look at the flag.
            Err(e) if e.errno() == nix::libc::EINTR => {
                vcpu.set_kvm_immediate_exit(0);
            }
            // The AP waited for INIT and SIPI and got them: run it.
            Err(e) if e.errno() == nix::libc::EAGAIN => {}
            Ok(VcpuExit::InternalError) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so
                // `internal` is the member of the exit union KVM filled.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                let what = format!(
                    "KVM_EXIT_INTERNAL_ERROR, suberror {}, data {:#x?}",
                    internal.suberror,
                    &internal.data[..n]
                );
                let _ = tx.send(Request::Failed(id, what));
                signals::wake_vcpu();
                return;
            }
            other => {
                let what = match other {
                    Ok(exit) => format!("exit {exit:?}"),
                    Err(e) => format!("KVM_RUN: {e}"),
                };
                let _ = tx.send(Request::Failed(id, what));
                signals::wake_vcpu();
                return;
            }
        }
    }
}
