/* SPDX-License-Identifier: MIT */
/* A program outside the baton tree, built against an installed baton with
 * find_package(baton) or pkg-config: passes one descriptor to itself. */
#define _GNU_SOURCE
#include <baton/fdpass.h>
#include <baton/wire.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void)
{
	if (strcmp(bt_version(), BATON_VERSION_STRING) != 0) {
		fprintf(stderr, "header %s, library %s\n", BATON_VERSION_STRING, bt_version());
		return 1;
	}
	int sv[2];
	bt_fdpass_t *a, *b;
	if (bt_fdpass_pair(sv, 0) || bt_fdpass_open(&a, sv[0]) || bt_fdpass_open(&b, sv[1]))
		return 1;
	int fd = memfd_create("consumer", MFD_CLOEXEC);
	struct bt_wire_item it = {.id = 7, .flags = BT_WIRE_ITEM_FD, .fd = fd};
	struct bt_wire_msg m;
	if (bt_fdpass_send_batch(a, 1, &it, 1) != 0 || bt_fdpass_recv(b, &m) != 1 ||
	    m.u.batch.items[0].id != 7 || m.u.batch.items[0].fd < 0)
		return 1;
	close(m.u.batch.items[0].fd);
	close(fd);
	bt_fdpass_close(a);
	bt_fdpass_close(b);
	printf("consumer: baton %s ok\n", bt_version());
	return 0;
}
