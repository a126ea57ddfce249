/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading a KVM_GET_STATS_FD file (api.rst, "KVM_GET_STATS_FD"): the header
 * and descriptors once, then values by name, live.
 */
#ifndef RKVM_SELFTEST_STATS_H
#define RKVM_SELFTEST_STATS_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

/* Not in the uapi header; api.rst: "name_size ... KVM_STATS_NAME_SIZE (48)". */
#define KVM_STATS_NAME_SIZE	48

struct stats {
	int fd;
	struct kvm_stats_header h;
	char *descs;		/* num_desc entries of sizeof(desc) + name_size */
};

static inline int stats_open(struct stats *s, int vm_or_vcpu_fd)
{
	s->fd = ioctl(vm_or_vcpu_fd, KVM_GET_STATS_FD, 0);
	if (s->fd < 0)
		return -errno;
	if (pread(s->fd, &s->h, sizeof(s->h), 0) != sizeof(s->h))
		return -EIO;
	s->descs = calloc(s->h.num_desc, sizeof(struct kvm_stats_desc) + s->h.name_size);
	if (!s->descs)
		return -ENOMEM;
	if (pread(s->fd, s->descs, s->h.num_desc * (sizeof(struct kvm_stats_desc) + s->h.name_size),
		  s->h.desc_offset) < 0)
		return -errno;
	return 0;
}

static inline struct kvm_stats_desc *stats_desc(struct stats *s, const char *name)
{
	uint32_t i;

	for (i = 0; i < s->h.num_desc; i++) {
		struct kvm_stats_desc *d = (void *)(s->descs + i * (sizeof(*d) + s->h.name_size));

		if (!strcmp(d->name, name))
			return d;
	}
	return NULL;
}

/* The value of `name`, read live from the data block; ~0 if absent. */
static inline uint64_t stats_value(struct stats *s, const char *name)
{
	struct kvm_stats_desc *d = stats_desc(s, name);
	uint64_t v;

	if (!d || pread(s->fd, &v, sizeof(v), s->h.data_offset + d->offset) != sizeof(v))
		return ~0ULL;
	return v;
}

static inline void stats_close(struct stats *s)
{
	free(s->descs);
	close(s->fd);
}

#endif
