/* SPDX-License-Identifier: MIT */
/*
 * Replays fuzz inputs through LLVMFuzzerTestOneInput without libFuzzer, so
 * that gcc builds (and every sanitizer build) run the seed corpus as a test.
 * Usage: fuzz_wire_replay FILE|DIR ...   (a crash is a failure: abort()).
 * With --write-seeds DIR it writes the seed corpus from the encoder.
 */
#include <baton/wire.h>

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return -1;
	}
	static uint8_t buf[BT_WIRE_MAX_MSG + 16];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	return 0;
}

static int write_seed(const char *dir, const char *name, unsigned char fdbyte,
		      const void *msg, long len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || len < 0) {
		perror(path);
		return -1;
	}
	fputc(fdbyte, f);
	fwrite(msg, 1, (size_t)len, f);
	return fclose(f);
}

static int write_seeds(const char *dir)
{
	static unsigned char buf[BT_WIRE_MAX_MSG];
	static struct bt_wire_item it[BT_WIRE_MAX_ITEMS];
	mkdir(dir, 0755);
	memset(it, 0, sizeof(it));
	for (int i = 0; i < 6; i++) {
		it[i].id = (uint64_t)i;
		it[i].flags = (i % 2) ? BT_WIRE_ITEM_FD : 0;
		it[i].payload = "payload";
		it[i].payload_len = (uint32_t)i;
	}
	struct sockaddr_in *sin = (void *)&it[0].peer;
	sin->sin_family = AF_INET;
	it[0].peer_len = sizeof(*sin);
	struct sockaddr_in6 *sin6 = (void *)&it[1].peer;
	sin6->sin6_family = AF_INET6;
	it[1].peer_len = sizeof(*sin6);
	struct sockaddr_un *sun = (void *)&it[2].peer;
	sun->sun_family = AF_UNIX;
	strcpy(sun->sun_path, "/tmp/x");
	it[2].peer_len = sizeof(sa_family_t) + 7;
	sun = (void *)&it[3].peer;
	sun->sun_family = AF_UNIX;
	it[3].peer_len = sizeof(sa_family_t);
	int rc = 0;
	rc |= write_seed(dir, "batch6", 3, buf, bt_wire_encode_batch(buf, sizeof(buf), 1, it, 6));
	rc |= write_seed(dir, "batch6_ctrunc", 0x81, buf, bt_wire_encode_batch(buf, sizeof(buf), 1, it, 6));
	for (int i = 0; i < 253; i++)
		it[i].flags = BT_WIRE_ITEM_FD;
	rc |= write_seed(dir, "batch253", 0xff, buf, bt_wire_encode_batch(buf, sizeof(buf), 2, it, 253));
	struct bt_wire_ack ack = {.seq = 5, .fds_total = 9, .load = 1, .n_lost = 2, .lost = {3, 4}};
	rc |= write_seed(dir, "ack", 0, buf, bt_wire_encode_ack(buf, sizeof(buf), 0, &ack));
	struct bt_wire_hello h = {.worker_id = 1, .pid = 2, .version = 1};
	rc |= write_seed(dir, "hello", 0, buf, bt_wire_encode_hello(buf, sizeof(buf), 0, &h));
	struct bt_wire_drain d = {.deadline_ms = 7};
	rc |= write_seed(dir, "drain", 0, buf, bt_wire_encode_drain(buf, sizeof(buf), 0, &d));
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
		return write_seeds(argv[2]);
	int files = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(argv[i]) < 0)
				return 1;
			files++;
			continue;
		}
		DIR *d = opendir(argv[i]);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
			if (replay_file(path) < 0)
				return 1;
			files++;
		}
		if (d)
			closedir(d);
	}
	printf("replayed %d inputs, no crash\n", files);
	return files ? 0 : 1;
}
