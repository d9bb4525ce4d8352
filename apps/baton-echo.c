/* SPDX-License-Identifier: MIT */
/*
 * baton-echo: an echo server on baton.  Every byte a client sends comes
 * back; the connection closes when the client closes.
 *
 *   baton-echo --listen 127.0.0.1:7000 --workers 2   (7000 on 127.0.0.1 is the default)
 */
#include <baton/loop.h>
#include <baton/runtime.h>

static void on_data(bt_conn_t *c, const void *data, size_t len)
{
	if (bt_conn_write(c, data, len) < 0)
		bt_conn_abort(c);
}

int main(int argc, char **argv)
{
	struct bt_runtime_config cfg;
	bt_runtime_config_init(&cfg, NULL, argc, argv); /* named after argv[0] */
	cfg.default_listen = "127.0.0.1:7000";
	int rc = bt_runtime_parse_args(&cfg, argc, argv, NULL,
				       "An echo server: every byte a client sends comes back.");
	if (rc)
		return rc == 1 ? 0 : 2;
	static const struct bt_handler h = {.size = sizeof(struct bt_handler), .on_data = on_data};
	return bt_runtime_run(&cfg, &h, NULL);
}
