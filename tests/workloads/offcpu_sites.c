// offcpu_sites: a workload with known off-CPU ground truth for stallwatch's integration tests.
//
// Each blocking thread waits at one site and measures its own blocked time around every
// blocking call with CLOCK_MONOTONIC; the totals are printed as JSON at the end and the tests
// compare them with what the tracer reports.
//
// Debian's glibc is built without frame pointers, so a frame-pointer walk that starts inside a
// libc wrapper loses its caller. Each site is therefore a noinline function that issues the
// syscall itself (inline `syscall`), which keeps the user stack `site_x <- x_thread <- ...`.
// The condvar site has to go through pthread_cond_wait, so its user stack is broken by design;
// the tests attribute it by thread name and kernel futex frames instead.
//
// Protocol (stdout, one JSON object per line):
//   1. {"pid":P,"tids":{"sw-sleep":T,...}}   once every thread exists and is named;
//   2. unless --no-wait: read a line from stdin ("go") before the measured phase starts;
//   3. {"pid":P,"sites":{"sw-sleep":{"tid":T,"blocked_ns":X,"count":N,"longest_ns":L},...}}
//      at the end.
// Before the measured phase every thread blocks in gate_wait() (a read on a pipe that main
// closes), so the gate wait is distinguishable from the sites in the folded output.
//
// x86_64 only (raw syscall numbers and the `syscall` instruction).

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SITE_PERIOD_NS (20 * 1000 * 1000L)
#define SHORT_PERIOD_NS (1 * 1000 * 1000L)
// sw-short does this many 1 ms sleeps per iteration.
#define SHORT_PER_ITERATION 4

static long iterations = 50;
static int gate_fds[2];
static int data_pipe[2];
static int epoll_fd;

static pthread_mutex_t cv_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long cv_generation;

// Each thread writes one byte here once it is named; main reads them all. A pipe rather than a
// barrier, so the threads never wait on a futex outside the condvar site.
static int ready_fds[2];

struct site {
    const char *name;
    void *(*main)(void *);
    pid_t tid;
    // Measured blocked time at the site and number of blocking calls; 0 for helper threads.
    uint64_t blocked_ns;
    uint64_t count;
    // The longest blocking call.
    uint64_t longest_ns;
    pthread_t thread;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline long raw_syscall4(long nr, long a1, long a2, long a3, long a4) {
    long ret;
    register long r10 __asm__("r10") = a4;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

// The blocking sites. Each one is the innermost user frame when its thread leaves the CPU.

__attribute__((noinline)) long site_nanosleep(long ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L};
    return raw_syscall4(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, (long)&ts, 0);
}

__attribute__((noinline)) long site_short_sleep(long ns) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ns};
    return raw_syscall4(SYS_nanosleep, (long)&ts, 0, 0, 0);
}

__attribute__((noinline)) long site_epoll_wait(int epfd, int timeout_ms) {
    struct epoll_event ev;
    return raw_syscall4(SYS_epoll_wait, epfd, (long)&ev, 1, timeout_ms);
}

// Reads into a local so the function has a stack frame: gcc emits no frame for a leaf without
// locals even with -mno-omit-leaf-frame-pointer, and the walk would then skip its caller.
__attribute__((noinline)) long site_pipe_read(int fd, char *buf) {
    char c;
    long ret = raw_syscall4(SYS_read, fd, (long)&c, 1, 0);
    *buf = c;
    return ret;
}

__attribute__((noinline)) int site_condvar_wait(long generation) {
    while (cv_generation <= generation) pthread_cond_wait(&cv, &cv_mutex);
    return 0;
}

// Blocks until main closes the gate pipe (EOF).
__attribute__((noinline)) long gate_wait(void) {
    char c;
    return raw_syscall4(SYS_read, gate_fds[0], (long)&c, 1, 0);
}

// Counts one blocking call that began at t0.
static inline void account(struct site *s, uint64_t t0) {
    uint64_t ns = now_ns() - t0;
    s->blocked_ns += ns;
    s->count++;
    if (ns > s->longest_ns) s->longest_ns = ns;
}

static void die(const char *what) {
    fprintf(stderr, "offcpu_sites: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void sleep_ns(long ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

// Names the calling thread, records its tid, waits until all threads exist, then for the gate.
static void thread_start(struct site *s) {
    pthread_setname_np(pthread_self(), s->name);
    s->tid = (pid_t)syscall(SYS_gettid);
    if (write(ready_fds[1], "r", 1) != 1) die("ready write");
    if (gate_wait() != 0) die("gate read");
}

__attribute__((noinline)) void *sleep_thread(void *arg) {
    struct site *s = arg;
    thread_start(s);
    for (long i = 0; i < iterations; i++) {
        uint64_t t0 = now_ns();
        site_nanosleep(SITE_PERIOD_NS);
        account(s, t0);
    }
    return NULL;
}

__attribute__((noinline)) void *short_thread(void *arg) {
    struct site *s = arg;
    thread_start(s);
    for (long i = 0; i < iterations * SHORT_PER_ITERATION; i++) {
        uint64_t t0 = now_ns();
        site_short_sleep(SHORT_PERIOD_NS);
        account(s, t0);
    }
    return NULL;
}

__attribute__((noinline)) void *epoll_thread(void *arg) {
    struct site *s = arg;
    thread_start(s);
    for (long i = 0; i < iterations; i++) {
        uint64_t t0 = now_ns();
        site_epoll_wait(epoll_fd, SITE_PERIOD_NS / 1000000);
        account(s, t0);
    }
    return NULL;
}

__attribute__((noinline)) void *pipe_thread(void *arg) {
    struct site *s = arg;
    char c;
    thread_start(s);
    for (long i = 0; i < iterations; i++) {
        uint64_t t0 = now_ns();
        if (site_pipe_read(data_pipe[0], &c) != 1) die("pipe read");
        account(s, t0);
    }
    return NULL;
}

__attribute__((noinline)) void *writer_thread(void *arg) {
    thread_start(arg);
    for (long i = 0; i < iterations; i++) {
        sleep_ns(SITE_PERIOD_NS);
        if (write(data_pipe[1], "x", 1) != 1) die("pipe write");
    }
    return NULL;
}

__attribute__((noinline)) void *condvar_thread(void *arg) {
    struct site *s = arg;
    thread_start(s);
    for (long i = 0; i < iterations; i++) {
        // Measure from before the lock to after the unlock: every futex wait of this thread in
        // the measured phase (condvar and mutex) falls inside the window.
        uint64_t t0 = now_ns();
        pthread_mutex_lock(&cv_mutex);
        site_condvar_wait(i);
        pthread_mutex_unlock(&cv_mutex);
        account(s, t0);
    }
    return NULL;
}

__attribute__((noinline)) void *signal_thread(void *arg) {
    thread_start(arg);
    for (long i = 0; i < iterations; i++) {
        sleep_ns(SITE_PERIOD_NS);
        pthread_mutex_lock(&cv_mutex);
        cv_generation++;
        pthread_mutex_unlock(&cv_mutex);
        // Signal after unlocking, so the waiter does not wake only to block on the mutex.
        pthread_cond_signal(&cv);
    }
    return NULL;
}

static struct site sites[] = {
    {.name = "sw-sleep", .main = sleep_thread},
    {.name = "sw-short", .main = short_thread},
    {.name = "sw-epoll", .main = epoll_thread},
    {.name = "sw-pipe", .main = pipe_thread},
    {.name = "sw-writer", .main = writer_thread},
    {.name = "sw-condvar", .main = condvar_thread},
    {.name = "sw-signal", .main = signal_thread},
    {.name = "sw-tidtest", .main = sleep_thread},
};
#define NSITES (sizeof(sites) / sizeof(sites[0]))

static int is_helper(const struct site *s) {
    return s->main == writer_thread || s->main == signal_thread;
}

static void usage(void) {
    fprintf(stderr, "usage: offcpu_sites [--iterations N] [--no-wait]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int wait_for_go = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-wait") == 0) {
            wait_for_go = 0;
        } else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            iterations = strtol(argv[++i], NULL, 10);
            if (iterations <= 0) usage();
        } else {
            usage();
        }
    }

    if (pipe(gate_fds) != 0 || pipe(data_pipe) != 0 || pipe(ready_fds) != 0) die("pipe");
    epoll_fd = epoll_create1(0);
    if (epoll_fd < 0) die("epoll_create1");

    for (size_t i = 0; i < NSITES; i++) {
        if (pthread_create(&sites[i].thread, NULL, sites[i].main, &sites[i]) != 0)
            die("pthread_create");
    }
    for (size_t ready = 0; ready < NSITES; ready++) {
        char c;
        if (read(ready_fds[0], &c, 1) != 1) die("ready read");
    }

    printf("{\"pid\":%d,\"tids\":{", getpid());
    for (size_t i = 0; i < NSITES; i++)
        printf("%s\"%s\":%d", i ? "," : "", sites[i].name, sites[i].tid);
    printf("}}\n");
    fflush(stdout);

    if (wait_for_go) {
        char line[64];
        if (fgets(line, sizeof(line), stdin) == NULL) {
            fprintf(stderr, "offcpu_sites: stdin closed before \"go\"\n");
            return 1;
        }
    }
    close(gate_fds[1]);

    for (size_t i = 0; i < NSITES; i++) pthread_join(sites[i].thread, NULL);

    printf("{\"pid\":%d,\"sites\":{", getpid());
    int first = 1;
    for (size_t i = 0; i < NSITES; i++) {
        if (is_helper(&sites[i])) continue;
        printf("%s\"%s\":{\"tid\":%d,\"blocked_ns\":%llu,\"count\":%llu,\"longest_ns\":%llu}",
               first ? "" : ",", sites[i].name, sites[i].tid,
               (unsigned long long)sites[i].blocked_ns, (unsigned long long)sites[i].count,
               (unsigned long long)sites[i].longest_ns);
        first = 0;
    }
    printf("}}\n");
    return 0;
}
