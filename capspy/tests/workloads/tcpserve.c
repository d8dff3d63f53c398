/* A minimal web API stand-in: listens on the TCP port given, accepts one connection from itself
 * over loopback and answers it. Exits 0 when the exchange worked, 1 when any step failed (e.g.
 * bind() refused with EACCES for a port below net.ipv4.ip_unprivileged_port_start). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
	fprintf(stderr, "tcpserve: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: tcpserve PORT\n");
		return 2;
	}
	int port = atoi(argv[1]);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	addr.sin_addr.s_addr = htonl(INADDR_ANY);

	int srv = socket(AF_INET, SOCK_STREAM, 0);
	if (srv < 0)
		return fail("socket");
	if (bind(srv, (struct sockaddr *)&addr, sizeof addr) < 0)
		return fail("bind");
	if (listen(srv, 1) < 0)
		return fail("listen");

	int cli = socket(AF_INET, SOCK_STREAM, 0);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (cli < 0 || connect(cli, (struct sockaddr *)&addr, sizeof addr) < 0)
		return fail("connect");
	int conn = accept(srv, NULL, NULL);
	if (conn < 0)
		return fail("accept");

	const char reply[] = "HTTP/1.0 200 OK\r\n\r\nok\n";
	char buf[64] = { 0 };
	if (write(cli, "GET / HTTP/1.0\r\n\r\n", 18) != 18 || read(conn, buf, sizeof buf) <= 0)
		return fail("request");
	if (write(conn, reply, sizeof reply - 1) != (ssize_t)(sizeof reply - 1))
		return fail("reply");
	close(conn);
	memset(buf, 0, sizeof buf);
	if (read(cli, buf, sizeof buf - 1) <= 0 || strncmp(buf, "HTTP/1.0 200", 12) != 0)
		return fail("response");
	printf("tcpserve: served one request on port %d\n", port);
	return 0;
}
