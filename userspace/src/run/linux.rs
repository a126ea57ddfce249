// SPDX-License-Identifier: GPL-2.0

//! Loading a Linux bzImage for the 64-bit boot protocol
//! (Documentation/arch/x86/boot.rst): the protected-mode kernel at 1 MiB
//! (rust-vmm's linux-loader), the zero page with the setup header, an e820
//! map, the command line and the initramfs, and the CPU state the protocol
//! asks for at the 64-bit entry point.

use std::{fs::File, path::Path};

use kvm_ioctls::VcpuFd;
use linux_loader::{
    cmdline::Cmdline,
    configurator::{linux::LinuxBootConfigurator, BootConfigurator, BootParams},
    loader::{bootparam::boot_params, bzimage::BzImage, load_cmdline, KernelLoader},
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};

/// Where things go in guest physical memory (all below 1 MiB but the kernel
/// and initramfs).
const GDT: u64 = 0x500;
const ZERO_PAGE: u64 = 0x7000;
const PML4: u64 = 0x9000;
const CMDLINE: u64 = 0x2_0000;
const CMDLINE_MAX: usize = 4096;
const KERNEL: u64 = 0x10_0000;
/// The top of low memory (the EBDA and BIOS area above it are not RAM).
const LOW_RAM_END: u64 = 0x9_fc00;

/// Loads `kernel` (and `initrd`) into `mem`, writes the zero page and sets
/// up `vcpu` at the kernel's 64-bit entry point.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    vcpu: &VcpuFd,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<()> {
    let initrd = match initrd {
        Some(path) => Some(std::fs::read(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?),
        None => None,
    };
    let entry = load_memory(mem, mem_size, kernel, initrd.as_deref(), cmdline)?;
    setup_cpu(mem, vcpu, entry)
}

/// The memory half of [`load`]: returns the 64-bit entry point.
fn load_memory(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<u64> {
    let mut image = File::open(kernel).map_err(|source| Error::Open {
        path: kernel.into(),
        source,
    })?;
    let loaded = BzImage::load(
        mem,
        Some(GuestAddress(KERNEL)),
        &mut image,
        Some(GuestAddress(KERNEL)),
    )
    .map_err(|source| Error::NotBzImage {
        path: kernel.into(),
        source,
    })?;
    let hdr = loaded.setup_header.ok_or(Error::NoSetupHeader)?;
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    // The 64-bit entry point exists from boot protocol 2.12 on, if the
    // kernel says so (XLF_KERNEL_64).
    let (version, xloadflags) = (params.hdr.version, params.hdr.xloadflags);
    if version < 0x20c || xloadflags & 1 == 0 {
        return Err(Error::No64BitEntry {
            path: kernel.into(),
            version,
            xloadflags,
        });
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"

    let mut line = Cmdline::new(CMDLINE_MAX).map_err(Error::Cmdline)?;
    line.insert_str(cmdline).map_err(Error::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE), &line).map_err(Error::LoadCmdline)?;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;

    // The kernel decompresses itself in place: it needs init_size bytes at
    // its load address, more than the image file.
    let kernel_end = loaded
        .kernel_end
        .max(KERNEL + u64::from(params.hdr.init_size));
    if kernel_end > mem_size {
        return Err(Error::KernelNeedsMemory {
            mib: kernel_end.div_ceil(1 << 20),
        });
    }
    if let Some(data) = initrd {
        // At the top of RAM below initrd_addr_max, page-aligned.
        let limit = mem_size.min(u64::from(params.hdr.initrd_addr_max) + 1);
        let at = limit.checked_sub(data.len() as u64).map(|a| a & !0xfff);
        let at = at
            .filter(|&a| a >= kernel_end)
            .ok_or(Error::InitrdDoesNotFit)?;
        mem.write_slice(data, GuestAddress(at))
            .map_err(Error::guest_memory("loading the initramfs"))?;
        params.hdr.ramdisk_image = at as u32;
        params.hdr.ramdisk_size = data.len() as u32;
    }

    let ram = [(0, LOW_RAM_END), (KERNEL, mem_size - KERNEL)];
    for (i, (addr, size)) in ram.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].r#type = 1; // E820_RAM
    }
    params.e820_entries = ram.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(Error::ZeroPage)?;
    Ok(loaded.kernel_load.0 + 0x200)
}

/// 64-bit mode with the first 1 GiB identity-mapped, a GDT with the boot
/// protocol's __BOOT_CS (0x10) and __BOOT_DS (0x18), RSI at the zero page.
fn setup_cpu(mem: &GuestMemoryMmap, vcpu: &VcpuFd, entry: u64) -> Result<()> {
    super::setup::enter_long_mode(vcpu, mem, PML4, 0x10, Some(GDT))?;
    let mut regs = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    regs.rip = entry;
    regs.rsi = ZERO_PAGE;
    regs.rsp = ZERO_PAGE; // any valid stack; the kernel sets its own
    regs.rflags = 2;
    vcpu.set_regs(&regs).map_err(Error::ioctl("KVM_SET_REGS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a minimal bzImage header (4 setup sectors, protocol
    /// 2.15, LOADED_HIGH, XLF_KERNEL_64) and `payload` bytes of kernel.
    fn fake_bzimage(
        name: &str,
        payload: usize,
        init_size: u32,
        xloadflags: u16,
    ) -> std::path::PathBuf {
        let mut img = vec![0u8; 5 * 512 + payload];
        img[0x1f1] = 4; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        let path = std::env::temp_dir().join(format!("rkvm-test-{}-{name}", std::process::id()));
        std::fs::write(&path, img).unwrap();
        path
    }

    fn memory(mib: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (mib << 20) as usize)]).unwrap()
    }

    #[test]
    fn zero_page_describes_kernel_initramfs_and_memory() {
        let kernel = fake_bzimage("ok", 4096, 3 << 20, 1);
        let mem = memory(8);
        let entry =
            load_memory(&mem, 8 << 20, &kernel, Some(&[7u8; 5000]), "console=ttyS0").unwrap();
        assert_eq!(entry, 0x10_0200);
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
        let (image, size, cmd) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size, p.hdr.cmd_line_ptr);
        assert_eq!(
            (image, size),
            ((8 << 20) - 8192, 5000),
            "initramfs page-aligned at the top"
        );
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(u64::from(image))).unwrap(),
            7
        );
        assert_eq!(cmd, CMDLINE as u32);
        let mut line = [0u8; 14];
        mem.read_slice(&mut line, GuestAddress(CMDLINE)).unwrap();
        assert_eq!(&line, b"console=ttyS0\0");
        assert_eq!(p.e820_entries, 2);
        let (addr, len) = (p.e820_table[1].addr, p.e820_table[1].size);
        assert_eq!((addr, len), (KERNEL, (8 << 20) - KERNEL));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn the_initramfs_may_not_overlap_the_decompressing_kernel() {
        // A 4 KiB image that decompresses to 6 MiB: an initramfs of 1.5 MiB
        // would fit above the image but not above init_size.
        let kernel = fake_bzimage("overlap", 4096, 6 << 20, 1);
        let err = load_memory(&memory(8), 8 << 20, &kernel, Some(&vec![0; 3 << 19]), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit above the kernel"), "{err}");
        let err = load_memory(&memory(4), 4 << 20, &kernel, None, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs 7 MiB"), "{err}");
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_boot() {
        let kernel = fake_bzimage("32bit", 4096, 1 << 20, 0);
        let err = load_memory(&memory(8), 8 << 20, &kernel, None, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no 64-bit entry point"), "{err}");
        std::fs::write(&kernel, b"not a kernel").unwrap();
        let err = load_memory(&memory(8), 8 << 20, &kernel, None, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a bzImage"), "{err}");
        std::fs::remove_file(kernel).unwrap();
    }
}
