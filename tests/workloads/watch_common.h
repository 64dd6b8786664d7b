// watch_common.h: the stdout protocol and options shared by the `stallwatch watch` workloads
// (deadlock_abba.c, recv_stall.c, healthy.c). Header-only; build.rs compiles only the .c files.
//
// Protocol (stdout, line-buffered):
//   pid <PID>
//   tid <role> <TID>        one per interesting thread, named <role> (main keeps the program name)
//   lock <name> 0x<addr>    address of a pthread_mutex_t
//   port <N>                a listening TCP port
//   READY                   once the situation under test is established
// Options: --delay-ms N (wait after printing pid/tids, before creating the situation) and
// --timeout-s N (SIGALRM kills the process after N seconds; default 120).

#ifndef WATCH_COMMON_H
#define WATCH_COMMON_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 120

struct common_opts {
    long delay_ms;
    long timeout_s;
};

static inline pid_t current_tid(void) { return (pid_t)syscall(SYS_gettid); }

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

// Line-buffered stdout and the default safety timeout (overridden by --timeout-s).
static inline void common_start(struct common_opts *opts) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    opts->delay_ms = 0;
    opts->timeout_s = DEFAULT_TIMEOUT_S;
    alarm(DEFAULT_TIMEOUT_S);
}

// Consumes argv[*i] (and its value) if it is a common option; returns 1 if it did.
static inline int common_arg(struct common_opts *opts, int argc, char **argv, int *i) {
    long *target = NULL;
    if (strcmp(argv[*i], "--delay-ms") == 0)
        target = &opts->delay_ms;
    else if (strcmp(argv[*i], "--timeout-s") == 0)
        target = &opts->timeout_s;
    else
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", argv[*i]);
        exit(2);
    }
    *target = strtol(argv[++*i], NULL, 10);
    if (target == &opts->timeout_s)
        alarm((unsigned)opts->timeout_s);
    return 1;
}

static inline void usage_error(const char *arg) {
    fprintf(stderr, "unknown argument %s\n", arg);
    exit(2);
}

// For workloads with only the common options: starts, then parses argv, failing on anything
// else.
static inline void common_start_with_args(struct common_opts *opts, int argc, char **argv) {
    common_start(opts);
    for (int i = 1; i < argc; i++) {
        if (!common_arg(opts, argc, argv, &i))
            usage_error(argv[i]);
    }
}

// Names the calling thread after its role and returns its tid.
static inline pid_t name_self(const char *role) {
    pthread_setname_np(pthread_self(), role);
    return current_tid();
}

// Prints `pid <PID>` and `tid main <TID>` (call from main).
static inline void print_pid_and_main(void) {
    printf("pid %d\n", (int)getpid());
    printf("tid main %d\n", (int)current_tid());
}

// Syscall number thread `tid` of this process is blocked in, -1 if it is not in one.
static inline long task_syscall_nr(pid_t tid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long nr = -1;
    if (!fgets(buf, sizeof buf, f) || strncmp(buf, "running", 7) == 0)
        nr = -1;
    else
        nr = strtol(buf, NULL, 10);
    fclose(f);
    return nr;
}

// Waits (up to 5 s) until thread `tid` sits in syscall `nr`; READY should follow the kernel
// actually holding the thread, not merely the thread having been told to block.
static inline void wait_in_syscall(pid_t tid, long nr) {
    for (int i = 0; i < 500; i++) {
        if (task_syscall_nr(tid) == nr)
            return;
        sleep_ms(10);
    }
    fprintf(stderr, "thread %d never entered syscall %ld\n", (int)tid, nr);
}

// Waits (up to 5 s) until thread `tid` sits in a futex call on `addr` (its first argument).
static inline void wait_in_futex_on(pid_t tid, const void *addr) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            int in_futex = 0;
            if (fgets(buf, sizeof buf, f) && strtol(buf, NULL, 10) == SYS_futex) {
                char *arg = strchr(buf, ' ');
                in_futex = arg && strtoull(arg, NULL, 16) == (unsigned long long)(uintptr_t)addr;
            }
            fclose(f);
            if (in_futex)
                return;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "thread %d never waited on futex %p\n", (int)tid, addr);
}

#endif
