/*
 * pingpong: the context-switch-heavy workload of `cargo xtask bench`.
 *
 * Two processes pinned to CPU 0 pass one byte back and forth over two pipes for -d SECONDS.
 * Each side blocks in read() until the other writes, so with both on one CPU every round trip
 * is two context switches; both run SCHED_BATCH so a wakeup never preempts the writer before
 * it blocks (both switches are voluntary). Prints one JSON line:
 *   {"round_trips":N,"seconds":S,"round_trips_per_sec":R,
 *    "voluntary_switches":V,"involuntary_switches":I}
 * The switch counts (getrusage of both processes) let the caller check the two-switch claim.
 *
 * Build: gcc -O2 -g -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -pthread
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

/* Child: echo every byte back until the parent closes its end. */
static void echo_loop(int in, int out)
{
    char b;
    while (read(in, &b, 1) == 1)
        if (write(out, &b, 1) != 1)
            die("child write");
    exit(0);
}

int main(int argc, char **argv)
{
    double seconds = 3.0;
    int opt;
    while ((opt = getopt(argc, argv, "d:")) != -1) {
        if (opt == 'd') {
            seconds = atof(optarg);
        } else {
            fprintf(stderr, "usage: %s [-d SECONDS]\n", argv[0]);
            return 2;
        }
    }
    if (seconds <= 0) {
        fprintf(stderr, "pingpong: -d must be positive\n");
        return 2;
    }

    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(0, &cpus);
    if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) /* inherited by the child */
        die("sched_setaffinity");

    /* SCHED_BATCH turns off wakeup preemption: the writer keeps the CPU until it blocks in
     * read(), so both switches of a round trip are voluntary (no involuntary preemptions). */
    struct sched_param param = { 0 };
    if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) /* inherited by the child */
        die("sched_setscheduler");

    int to_child[2], to_parent[2];
    if (pipe(to_child) != 0 || pipe(to_parent) != 0)
        die("pipe");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        echo_loop(to_child[0], to_parent[1]);
    }
    close(to_child[0]);
    close(to_parent[1]);

    unsigned long round_trips = 0;
    char b = 'x';
    double start = now_s(), elapsed = 0;
    for (;;) {
        if (write(to_child[1], &b, 1) != 1)
            die("write");
        if (read(to_parent[0], &b, 1) != 1)
            die("read");
        round_trips++;
        if ((round_trips & 255) == 0 && (elapsed = now_s() - start) >= seconds)
            break;
    }
    close(to_child[1]); /* EOF ends the child */
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "pingpong: child failed\n");
        return 1;
    }

    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    printf("{\"round_trips\":%lu,\"seconds\":%.6f,\"round_trips_per_sec\":%.1f,"
           "\"voluntary_switches\":%ld,\"involuntary_switches\":%ld}\n",
           round_trips, elapsed, round_trips / elapsed, self.ru_nvcsw + children.ru_nvcsw,
           self.ru_nivcsw + children.ru_nivcsw);
    return 0;
}
