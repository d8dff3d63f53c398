/* capprobe: one capability check per mode, each reaching cap_capable by a different caller.
 * Used by `cargo xtask vm-test` to find which call sites a hook on the cap_capable symbol
 * misses where the kernel inlined cap_capable into its caller. Built with `gcc -static`. */
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(const char *what)
{
	fprintf(stderr, "capprobe: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";

	/* SETPCAP through ns_capable() (cap_prctl_drop): a call into the cap_capable symbol. */
	if (strcmp(mode, "bset-drop") == 0) {
		if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0) != 0)
			return fail("prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT)");
		return 0;
	}
	/* SETPCAP asked by cap_task_prctl itself, which calls cap_capable directly. */
	if (strcmp(mode, "securebits") == 0) {
		if (prctl(PR_SET_SECUREBITS, 1 << 4 /* SECBIT_KEEP_CAPS */, 0, 0, 0) != 0)
			return fail("prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS)");
		return 0;
	}
	/* SETPCAP asked by cap_capset (cap_inh_is_capped) on every capset(2). */
	if (strcmp(mode, "capset") == 0) {
		struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct data[2];
		if (syscall(SYS_capget, &hdr, data) != 0)
			return fail("capget");
		if (syscall(SYS_capset, &hdr, data) != 0)
			return fail("capset (unchanged sets)");
		return 0;
	}
	/* SYS_RAWIO asked by cap_mmap_addr for a mapping below vm.mmap_min_addr. */
	if (strcmp(mode, "mmap-zero") == 0) {
		void *p = mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (p == MAP_FAILED)
			return fail("mmap at address 0");
		munmap(p, 4096);
		return 0;
	}
	/* Not a probe: runs a command as another user, for a process capspy's workload may look at
	 * (its /proc/PID/stat asks for SYS_PTRACE with noaudit). */
	if (strcmp(mode, "as-uid") == 0 && argc > 3) {
		uid_t id = (uid_t)strtoul(argv[2], 0, 10);
		if (setgroups(0, 0) != 0 || setgid(id) != 0 || setuid(id) != 0)
			return fail("dropping to the uid");
		execvp(argv[3], argv + 3);
		return fail(argv[3]);
	}
	fprintf(stderr, "usage: capprobe bset-drop|securebits|capset|mmap-zero\n"
			"       capprobe as-uid UID CMD [ARGS...]\n");
	return 2;
}
