/* A kernel module loader, with a module that cannot load: init_module() with a 16-byte image,
 * shorter than an ELF header. The kernel checks CAP_SYS_MODULE first (may_init_module) and only
 * then rejects the image with ENOEXEC, before any signature or lockdown check could also answer
 * EPERM. So: ENOEXEC means the permission check passed (exit 0), EPERM that it (or seccomp)
 * refused (exit 1), ENOSYS that the kernel has no module support (exit 3). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	static const char image[16] = "not a module";
	if (syscall(SYS_init_module, image, sizeof image, "") == 0) {
		fprintf(stderr, "modload: the bogus module loaded?\n");
		return 4;
	}
	int err = errno;
	printf("modload: init_module: %s\n", strerror(err));
	switch (err) {
	case EPERM:
		return 1;
	case ENOSYS:
		return 3;
	default:
		return 0;
	}
}
