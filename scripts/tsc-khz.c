// SPDX-License-Identifier: GPL-2.0
/*
 * Prints this machine's TSC frequency in kHz, measured against
 * CLOCK_MONOTONIC_RAW over 200 ms. Under QEMU's TCG a guest's RDTSC reads
 * this machine's counter (plus an offset), so this is the test VM's TSC
 * frequency too: vm-qemu.sh tells the test kernel (tsc_early_khz=), which
 * has no ACPI, hence no HPET or PM timer to calibrate its TSC against.
 */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC_RAW, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	struct timespec pause = { 0, 200 * 1000 * 1000 };
	double t0 = seconds();
	unsigned long long c0 = __rdtsc();
	double t1;
	unsigned long long c1;

	nanosleep(&pause, NULL);
	t1 = seconds();
	c1 = __rdtsc();
	printf("%.0f\n", (c1 - c0) / (t1 - t0) / 1000);
	return 0;
}
