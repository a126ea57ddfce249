# rkvm: the two commands a user needs are `make run` and `make test`.
# (Kbuild reads ./Kbuild, not this file, when it builds rkvm.ko.)

.PHONY: run test bench shell setup build module install lint fmt clean help

## run: set up, build, boot the QEMU test VM, load rkvm.ko and show `rkvm info`
run:
	@scripts/run.sh

## test: host unit tests + QEMU (SVM), QEMU debug kernel and Bochs (VMX) test VMs; ends "N passed, N failed"
test:
	@scripts/test.sh

## bench: rkvm against real KVM in one boot of the QEMU test VM; build/bench.{md,json,png}
bench:
	@scripts/bench.sh

## shell: a shell inside the QEMU test VM with rkvm.ko loaded
shell:
	@scripts/setup.sh && scripts/build.sh all && scripts/vm.sh qemu shell

## setup: install toolchain, emulators, kernel source and test kernel (cached)
setup:
	@scripts/setup.sh

## build: rkvm.ko, the rkvm tool, the selftests and the initramfs
build:
	@scripts/build.sh all

## module: rkvm.ko only; KDIR=/path/to/kernel/build for a kernel of your own (Linux >= 7.3, CONFIG_RUST=y)
module:
	@KDIR="$(KDIR)" scripts/module.sh build

## install: rkvm.ko into /lib/modules of KDIR's kernel (default: the running kernel's build directory)
install:
	@KDIR="$(KDIR)" scripts/module.sh install

## lint: the kernel's style, checked: rustfmt, vertical imports, cargo clippy, rkvm.ko with CLIPPY=1 (make test runs it)
lint:
	@scripts/lint.sh

## fmt: format all Rust sources (rustfmt with the kernel's settings; the kernel's vertical imports in module/)
fmt:
	@scripts/fmt.sh

clean:
	rm -rf build target
	find module \( -name '*.o' -o -name '*.ko' -o -name '*.mod*' -o -name '.*.cmd' -o -name '*.d' \) -delete
	rm -f modules.order Module.symvers module/modules.order module/abi/kvm_uapi_generated.rs

help:
	@sed -n 's/^## //p' Makefile
