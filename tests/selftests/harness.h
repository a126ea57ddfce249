/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel tree's kselftest harness, with rkvm's time limit: a guard
 * against a hang, never a measure of speed. No test passes or fails by how
 * fast the machine is: each checks counts, values and errnos, and the
 * harness kills it only if it has clearly stopped making progress.
 *
 * The harness's own default (30 s per test) is a speed limit in disguise
 * here: under the debug kernel (KASAN, lockdep, kmemleak) in QEMU's
 * software emulation, on a machine busy with other work, the longest
 * tests (torture_test's VM cycles, the stress tests through kvm_amd) were
 * measured at up to RKVM_LONGEST_TEST_S; the guard is more than three
 * times that. Include this instead of kselftest_harness.h.
 */
#ifndef RKVM_SELFTEST_HARNESS_H
#define RKVM_SELFTEST_HARNESS_H

#include "kselftest_harness.h"

/*
 * TEST(), TEST_F() and friends read TEST_TIMEOUT_DEFAULT where they are
 * used, so redefining it here applies to every test of the file.
 */
#undef TEST_TIMEOUT_DEFAULT
#define TEST_TIMEOUT_DEFAULT 300

#endif
