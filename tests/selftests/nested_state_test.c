// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_GET/SET_NESTED_STATE of a vCPU that runs no nested guest, as a VMM
 * saves and restores it: kvm_amd's format (SVM, with the global interrupt
 * flag) or kvm_intel's (VMX, no VMXON region), each checked against the real
 * one first (this test runs under QEMU and Bochs).
 */
#include "harness.h"
#include "vm.h"
#include "guest_code.h"

struct nested_buf {
	struct kvm_nested_state s;
	uint8_t data[2 * 4096];
};

VM_FIXTURE(vcpu)

TEST_F(vcpu, nested_state_round_trip)
{
	static struct nested_buf buf, saved;
	struct kvm_nested_state *ns = &buf.s;
	int vcpu = self->vm.vcpu;
	bool intel = host_is_intel();

	EXPECT_EQ(intel ? 128 + 2 * 4096 : 128 + 4096,
		  ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_NESTED_STATE));
	EXPECT_EQ(128, sizeof(struct kvm_nested_state));

	/* Too small for the header: the size it needs, and nothing else. */
	memset(&buf, 0xaa, sizeof(buf));
	ns->size = 127;
	EXPECT_ERRNO(E2BIG, ioctl(vcpu, KVM_GET_NESTED_STATE, ns));
	EXPECT_EQ(128, ns->size);
	EXPECT_EQ(0xaaaa, ns->flags);
	EXPECT_EQ(0xaaaa, ns->format);
	EXPECT_ERRNO(EFAULT, ioctl(vcpu, KVM_GET_NESTED_STATE, NULL));

	/* The header alone, whatever room there is. */
	ns->size = sizeof(buf);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_NESTED_STATE, ns));
	EXPECT_EQ(128, ns->size);
	EXPECT_EQ(0xaa, buf.data[0]);
	if (intel) {
		EXPECT_EQ(KVM_STATE_NESTED_FORMAT_VMX, ns->format);
		EXPECT_EQ(0, ns->flags);
		EXPECT_EQ(~0ULL, ns->hdr.vmx.vmxon_pa);
		EXPECT_EQ(~0ULL, ns->hdr.vmx.vmcs12_pa);
		EXPECT_EQ(0, ns->hdr.vmx.smm.flags);
		EXPECT_EQ(0, ns->hdr.vmx.flags);
		EXPECT_EQ(0, ns->hdr.vmx.preemption_timer_deadline);
	} else {
		EXPECT_EQ(KVM_STATE_NESTED_FORMAT_SVM, ns->format);
		EXPECT_EQ(KVM_STATE_NESTED_GIF_SET, ns->flags);
		EXPECT_EQ(0, ns->hdr.svm.vmcb_pa);
	}
	/* Exactly the header at the size it names. */
	ns->size = 128;
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_NESTED_STATE, ns));
	saved = buf;

	/* Given back as it was. */
	EXPECT_EQ(0, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	EXPECT_ERRNO(EFAULT, ioctl(vcpu, KVM_SET_NESTED_STATE, NULL));
	/* Each refusal is EINVAL. */
	ns->size = 127;
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	buf = saved;
	ns->flags |= 0x10;				/* no such flag */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	buf = saved;
	ns->flags |= KVM_STATE_NESTED_RUN_PENDING;	/* without guest mode */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	buf = saved;
	ns->flags |= KVM_STATE_NESTED_GUEST_MODE;	/* the guest has no SVM/VMX on */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	buf = saved;
	ns->flags |= KVM_STATE_NESTED_EVMCS;
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	buf = saved;
	ns->format ^= 1;				/* the other vendor's */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	buf = saved;
	if (intel) {
		ns->hdr.vmx.vmcs12_pa = 0x1000;		/* a VMCS without VMXON */
		EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
		buf = saved;
		ns->hdr.vmx.smm.flags = KVM_STATE_NESTED_SMM_VMXON;
		EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
		buf = saved;
		ns->hdr.vmx.flags = 2;
		EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
		ns->hdr.vmx.flags = KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE;
		EXPECT_EQ(0, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
		buf = saved;
		ns->flags = KVM_STATE_NESTED_GIF_SET;	/* SVM's */
		EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	} else {
		/* The rest of the header is not looked at outside guest mode. */
		ns->hdr.svm.vmcb_pa = 0x1234;
		ns->size = sizeof(buf);
		EXPECT_EQ(0, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	}
	buf = saved;
	EXPECT_EQ(0, ioctl(vcpu, KVM_SET_NESTED_STATE, ns));
	memset(&buf, 0, sizeof(buf));
	ns->size = sizeof(buf);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_NESTED_STATE, ns));
	EXPECT_EQ(0, memcmp(&saved.s, ns, 128));
}

/*
 * SVM's global interrupt flag: cleared through KVM_SET_NESTED_STATE, the
 * vCPU takes no interrupt (ready_for_interrupt_injection stays 0 though
 * the guest's IF is set); set again, it does.
 */
GUEST_CODE16(gif_code,
	"	sti\n"
	"	nop\n"			/* out of STI's interrupt shadow */
	"1:	out %al, $0x10\n"
	"	jmp 1b\n");

TEST_F(vcpu, svm_gif)
{
	struct vm *vm = &self->vm;
	struct kvm_nested_state ns = { .size = 128 };

	if (host_is_intel())
		SKIP(return, "SVM only");
	LOAD_GUEST_CODE(vm->mem, 0x1000, gif_code);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->if_flag);
	EXPECT_EQ(1, vm->run->ready_for_interrupt_injection);

	ns.format = KVM_STATE_NESTED_FORMAT_SVM;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_NESTED_STATE, &ns));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_NESTED_STATE, &ns));
	EXPECT_EQ(0, ns.flags);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->if_flag);
	EXPECT_EQ(0, vm->run->ready_for_interrupt_injection);

	ns.flags = KVM_STATE_NESTED_GIF_SET;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_NESTED_STATE, &ns));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->ready_for_interrupt_injection);
}

TEST_HARNESS_MAIN
