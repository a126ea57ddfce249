/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest code for the in-kernel local APIC (apic_test, the irqfd
 * benchmark): real-mode code that turns on its x2APIC and handles one
 * vector through the interrupt vector table at 0.
 */
#ifndef RKVM_APIC_GUEST_H
#define RKVM_APIC_GUEST_H

/*
 * Enables the APIC in x2APIC mode (IA32_APIC_BASE EN and EXTD, the SVR's
 * software enable with spurious vector 0xff) and points vector \vec of the
 * IVT at the label \handler; the code is loaded at \base (a string).
 */
#define X2APIC_ON_AT(base, blob, vec, handler)					\
	"	xor %ax, %ax\n"							\
	"	mov %ax, %ds\n"							\
	"	movw $" base " + (" handler " - " blob "), " #vec " * 4\n"	\
	"	movw $0, " #vec " * 4 + 2\n"					\
	"	mov $0x1b, %ecx\n"						\
	"	rdmsr\n"							\
	"	or $0xc00, %eax\n"						\
	"	wrmsr\n"							\
	"	mov $0x80f, %ecx\n"						\
	"	mov $0x1ff, %eax\n"						\
	"	xor %edx, %edx\n"						\
	"	wrmsr\n"

/* X2APIC_ON_AT for code loaded at 0x1000. */
#define X2APIC_ON(blob, vec, handler)	X2APIC_ON_AT("0x1000", blob, vec, handler)

/* The handler's tail: EOI (x2APIC MSR 0x80b), the vector out to port 0x10. */
#define EOI_AND_OUT(vec)							\
	"	mov $0x80b, %ecx\n"						\
	"	xor %eax, %eax\n"						\
	"	xor %edx, %edx\n"						\
	"	wrmsr\n"							\
	"	mov $" #vec ", %al\n"						\
	"	out %al, $0x10\n"						\
	"	iret\n"

#endif
