/* A packet capture on loopback: an AF_PACKET raw socket (CAP_NET_RAW) bound to lo, with the
 * interface in promiscuous mode, set one of two ways:
 *   pktcap ioctl       SIOCSIFFLAGS with IFF_PROMISC, as ifconfig/ip do (CAP_NET_ADMIN);
 *   pktcap membership  PACKET_ADD_MEMBERSHIP with PACKET_MR_PROMISC on the capture socket, as
 *                      libpcap does on Linux (no capability check beyond the socket's).
 * It sends itself one UDP datagram over lo and exits 0 once the capture saw it, 1 when any step
 * failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int fail(const char *what)
{
	fprintf(stderr, "pktcap: %s: %s\n", what, strerror(errno));
	return 1;
}

static int set_promisc(int fd, int on)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	if (on)
		ifr.ifr_flags |= IFF_PROMISC;
	else
		ifr.ifr_flags &= ~IFF_PROMISC;
	return ioctl(fd, SIOCSIFFLAGS, &ifr);
}

int main(int argc, char **argv)
{
	static const char marker[] = "capspy-pktcap-marker";
	int ioctl_mode = argc < 2 || strcmp(argv[1], "membership") != 0;
	int cap = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (cap < 0)
		return fail("socket(AF_PACKET, SOCK_RAW)");
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	ll.sll_ifindex = (int)if_nametoindex("lo");
	if (ll.sll_ifindex == 0 || bind(cap, (struct sockaddr *)&ll, sizeof ll) < 0)
		return fail("bind to lo");
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(cap, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	int udp = socket(AF_INET, SOCK_DGRAM, 0);
	if (udp < 0)
		return fail("socket(AF_INET, SOCK_DGRAM)");
	if (ioctl_mode) {
		if (set_promisc(udp, 1) < 0)
			return fail("SIOCSIFFLAGS IFF_PROMISC on lo");
	} else {
		struct packet_mreq mreq = { .mr_ifindex = ll.sll_ifindex, .mr_type = PACKET_MR_PROMISC };
		if (setsockopt(cap, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0)
			return fail("PACKET_ADD_MEMBERSHIP PACKET_MR_PROMISC on lo");
	}

	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(9) };
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(udp, marker, sizeof marker, 0, (struct sockaddr *)&dst, sizeof dst) < 0)
		return fail("sendto 127.0.0.1:9");

	char frame[2048];
	int seen = 0;
	for (int i = 0; i < 64 && !seen; i++) {
		ssize_t n = recv(cap, frame, sizeof frame, 0);
		if (n < 0)
			break;
		seen = memmem(frame, (size_t)n, marker, sizeof marker - 1) != NULL;
	}
	/* The membership ends with the socket; the flag must be cleared. */
	if (ioctl_mode && set_promisc(udp, 0) < 0)
		return fail("clearing IFF_PROMISC on lo");
	if (!seen) {
		fprintf(stderr, "pktcap: the datagram was not captured\n");
		return 1;
	}
	printf("pktcap: captured our datagram on lo in promiscuous mode (%s)\n",
	       ioctl_mode ? "ioctl" : "membership");
	return 0;
}
