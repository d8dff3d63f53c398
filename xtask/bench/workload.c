/*
 * Workloads for `cargo xtask bench`, built with gcc -O2 -static. Each mode makes a known number
 * of capability checks and nothing else on the timed path (no stdio before the loop ends, no
 * allocation), so capspy's counts can be checked exactly.
 *
 *   workload setuid N             N x setuid(0): one CAP_SETUID check each (as root)
 *   workload mmap N               N x mmap+munmap of one private writable page: one CAP_SYS_ADMIN
 *                                 check each (the overcommit heuristic, an advisory check)
 *   workload rate PER_SEC SECONDS setuid(0) at a steady rate, in batches every millisecond
 *   workload cgroup DIR MODE N    join cgroup DIR, then N x setuid(0) (MODE setuid) or
 *                                 setgid(0) (MODE setgid); write one byte to stdout; pause()
 *
 * The timed modes print "calls C ns T cpu_ns U" on stdout: wall time, and the process's CPU time,
 * which holds the BPF programs' cost (they run in the calling task) and not the time other
 * processes take on a shared machine. The loops also run in CHUNKS equal parts and add
 * "best_cpu_ns B chunk_calls M": the CPU time of the fastest part, since other work on the machine
 * (cache and TLB pollution, a busy sibling hyperthread) only ever adds time. Exit status 2 on bad usage, 3 when a call
 * fails (e.g. not root).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define CHUNKS 10

/* The fastest chunk's CPU time, for the "best_cpu_ns" field. */
static long long best_chunk = -1;

static void chunk_done(long long *c) {
    long long now = cpu_ns();
    if (best_chunk < 0 || now - *c < best_chunk) {
        best_chunk = now - *c;
    }
    *c = now;
}

static void report(long calls, long long t0, long long c0) {
    long long t1 = now_ns();
    long long c1 = cpu_ns();
    printf("calls %ld ns %lld cpu_ns %lld", calls, t1 - t0, c1 - c0);
    if (best_chunk >= 0) {
        printf(" best_cpu_ns %lld chunk_calls %ld", best_chunk, calls / CHUNKS);
    }
    printf("\n");
}

static long parse(const char *s) {
    char *end;
    long n = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || n < 0) {
        fprintf(stderr, "workload: bad number %s\n", s);
        exit(2);
    }
    return n;
}

static int loop_setuid(long n) {
    long long c0 = cpu_ns();
    long long t0 = now_ns();
    long long c = c0;
    for (int k = 0; k < CHUNKS; k++) {
        for (long i = 0; i < n / CHUNKS; i++) {
            if (setuid(0) != 0) {
                return 3;
            }
        }
        chunk_done(&c);
    }
    report(n / CHUNKS * CHUNKS, t0, c0);
    return 0;
}

static int loop_mmap(long n) {
    long long c0 = cpu_ns();
    long long t0 = now_ns();
    long long c = c0;
    for (int k = 0; k < CHUNKS; k++) {
        for (long i = 0; i < n / CHUNKS; i++) {
            void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED || munmap(p, 4096) != 0) {
                return 3;
            }
        }
        chunk_done(&c);
    }
    report(n / CHUNKS * CHUNKS, t0, c0);
    return 0;
}

/* A steady load rather than a burst: the daemon's cost is per interval, so what matters is the
 * rate it sees, not how fast one core can make checks. */
static int rate(long per_sec, long seconds) {
    const long ticks_per_sec = 1000;
    long batch = per_sec / ticks_per_sec;
    long long t0 = now_ns();
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long long c0 = cpu_ns();
    long calls = 0;
    for (long tick = 0; tick < seconds * ticks_per_sec; tick++) {
        for (long i = 0; i < batch; i++) {
            if (setuid(0) != 0) {
                return 3;
            }
        }
        calls += batch;
        next.tv_nsec += 1000000000L / ticks_per_sec;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    report(calls, t0, c0);
    return 0;
}

static int in_cgroup(const char *dir, const char *mode, long n) {
    char path[4096];
    char pid[32];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int len = snprintf(pid, sizeof pid, "%d", getpid());
    if (fd < 0 || write(fd, pid, len) != len) {
        perror(path);
        return 3;
    }
    close(fd);
    int gid = strcmp(mode, "setgid") == 0;
    if (!gid && strcmp(mode, "setuid") != 0) {
        return 2;
    }
    for (long i = 0; i < n; i++) {
        if ((gid ? setgid(0) : setuid(0)) != 0) {
            return 3;
        }
    }
    /* Tell the bench this cgroup's checks are made, then stay alive until it kills us. */
    if (write(1, "x", 1) != 1) {
        return 3;
    }
    for (;;) {
        pause();
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "setuid") == 0) {
        return loop_setuid(parse(argv[2]));
    }
    if (argc == 3 && strcmp(argv[1], "mmap") == 0) {
        return loop_mmap(parse(argv[2]));
    }
    if (argc == 4 && strcmp(argv[1], "rate") == 0) {
        return rate(parse(argv[2]), parse(argv[3]));
    }
    if (argc == 5 && strcmp(argv[1], "cgroup") == 0) {
        return in_cgroup(argv[2], argv[3], parse(argv[4]));
    }
    fprintf(stderr, "usage: workload setuid N | mmap N | rate PER_SEC SECONDS | cgroup DIR MODE N\n");
    return 2;
}
