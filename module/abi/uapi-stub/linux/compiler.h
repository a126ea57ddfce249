/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What <linux/compiler.h> gives the source tree's uapi headers, for a
 * kernel build directory without `make headers` output (module/Kbuild):
 * headers_install deletes the include and `__user`; here the include finds
 * this empty file and `__user` is defined away on bindgen's command line.
 */
