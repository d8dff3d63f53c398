/* A kernel log reader, as a syslog forwarder's klogd part: asks how much of the kernel log is
 * unread (SYSLOG_ACTION_SIZE_UNREAD, which always needs CAP_SYSLOG, like the destructive
 * SYSLOG_ACTION_READ a forwarder uses), then reads the whole buffer (SYSLOG_ACTION_READ_ALL, what
 * dmesg does: it needs CAP_SYSLOG only while kernel.dmesg_restrict is 1). Exits 0 on success, 1
 * when the kernel (or seccomp) refuses. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>

#define SYSLOG_ACTION_READ_ALL 3
#define SYSLOG_ACTION_SIZE_UNREAD 9
#define SYSLOG_ACTION_SIZE_BUFFER 10

int main(void)
{
	int unread = klogctl(SYSLOG_ACTION_SIZE_UNREAD, NULL, 0);
	if (unread < 0) {
		fprintf(stderr, "klogread: klogctl(SIZE_UNREAD): %s\n", strerror(errno));
		return 1;
	}
	int size = klogctl(SYSLOG_ACTION_SIZE_BUFFER, NULL, 0);
	if (size <= 0)
		size = 1 << 16;
	char *buf = malloc(size);
	int n = buf ? klogctl(SYSLOG_ACTION_READ_ALL, buf, size) : -1;
	if (n < 0) {
		fprintf(stderr, "klogread: klogctl(READ_ALL): %s\n", strerror(errno));
		return 1;
	}
	printf("klogread: %d bytes unread, read %d bytes\n", unread, n);
	return 0;
}
