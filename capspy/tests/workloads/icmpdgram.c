/* An ICMP echo over loopback through a datagram ICMP socket (SOCK_DGRAM, IPPROTO_ICMP), as
 * iputils ping does when it has no raw socket: the kernel allows it to groups within
 * net.ipv4.ping_group_range, with no capability check. Exits 0 when the reply came back, 1 when
 * any step failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

static int fail(const char *what)
{
	fprintf(stderr, "icmpdgram: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	if (s < 0)
		return fail("socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)");
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	struct icmphdr req = { .type = ICMP_ECHO };
	req.un.echo.sequence = htons(1);
	struct sockaddr_in dst = { .sin_family = AF_INET };
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(s, &req, sizeof req, 0, (struct sockaddr *)&dst, sizeof dst) < 0)
		return fail("sendto 127.0.0.1");
	struct icmphdr reply;
	if (recv(s, &reply, sizeof reply, 0) < (ssize_t)sizeof reply)
		return fail("recv");
	if (reply.type != ICMP_ECHOREPLY) {
		fprintf(stderr, "icmpdgram: got ICMP type %d, not an echo reply\n", reply.type);
		return 1;
	}
	printf("icmpdgram: echo reply from 127.0.0.1\n");
	return 0;
}
