// deadlock_abba: a certain ABBA deadlock on pthread mutexes, for `stallwatch watch` tests.
//
// Thread abba-a takes A then B, thread abba-b takes B then A, with a barrier after the first
// locks so both second locks block forever. Thread healthy keeps sleeping 10 ms and taking an
// unrelated mutex C, so a tracer must tell the stuck threads from a live one in the same
// process. main blocks forever in pthread_join(abba-a).
//
// --pi: A, B and C use PTHREAD_PRIO_INHERIT. The kernel then sees the cycle: the thread that
// closes it (abba-b, which waits until abba-a waits for B) gets EDEADLK from FUTEX_LOCK_PI and
// glibc parks it forever in FUTEX_WAIT on a word on its own stack; abba-a stays in
// FUTEX_LOCK_PI on B.
//
// Output: see watch_common.h; roles main, abba-a, abba-b, healthy; locks A and B (and C).

#include "watch_common.h"

#include <semaphore.h>

static pthread_mutex_t lock_a, lock_b, lock_c;
static pthread_barrier_t start_barrier; // main, abba-a, abba-b: after the delay
static pthread_barrier_t held_barrier;  // main, abba-a, abba-b: both first locks taken
static sem_t named;                     // posted by each thread once its tid is known
static pid_t tid_a, tid_b, tid_healthy;

// Each blocking call sits in its own noinline function; the empty asm after the call keeps it
// from becoming a tail call, so the function stays a frame on the blocked stack.

__attribute__((noinline)) void take_a(void) {
    pthread_mutex_lock(&lock_a);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void take_b(void) {
    pthread_mutex_lock(&lock_b);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void lock_b_while_holding_a(void) {
    pthread_mutex_lock(&lock_b);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void lock_a_while_holding_b(void) {
    pthread_mutex_lock(&lock_a);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void healthy_sleep(void) {
    struct timespec ts = {0, 10 * 1000 * 1000L};
    nanosleep(&ts, NULL);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void healthy_touch_c(void) {
    pthread_mutex_lock(&lock_c);
    __asm__ volatile("" ::: "memory");
    pthread_mutex_unlock(&lock_c);
}

// Named without "join": the tracer must recognise the join from libc's frames and memory (also
// without libc's debug files), not from its caller's name.
__attribute__((noinline)) void await_abba_a(pthread_t thread) {
    pthread_join(thread, NULL);
    __asm__ volatile("" ::: "memory");
}

static void *abba_a_main(void *arg) {
    (void)arg;
    tid_a = name_self("abba-a");
    sem_post(&named);
    pthread_barrier_wait(&start_barrier);
    take_a();
    pthread_barrier_wait(&held_barrier);
    lock_b_while_holding_a();
    fprintf(stderr, "abba-a got B: no deadlock\n");
    return NULL;
}

static void *abba_b_main(void *arg) {
    (void)arg;
    tid_b = name_self("abba-b");
    sem_post(&named);
    pthread_barrier_wait(&start_barrier);
    take_b();
    pthread_barrier_wait(&held_barrier);
    // Close the cycle only once abba-a waits for B. Two PI locks closing it at the same moment
    // can both be refused with EDEADLK; one after the other, only the second is.
    wait_in_futex_on(tid_a, &lock_b);
    lock_a_while_holding_b();
    fprintf(stderr, "abba-b got A: no deadlock\n");
    return NULL;
}

static void *healthy_main(void *arg) {
    (void)arg;
    tid_healthy = name_self("healthy");
    sem_post(&named);
    for (;;) {
        healthy_sleep();
        healthy_touch_c();
    }
    return NULL;
}

static void init_mutex(pthread_mutex_t *m, int pi) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_NORMAL);
    if (pi && pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT) != 0) {
        fprintf(stderr, "PTHREAD_PRIO_INHERIT unsupported\n");
        exit(1);
    }
    pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
}

int main(int argc, char **argv) {
    struct common_opts opts;
    common_start(&opts);
    int pi = 0;
    for (int i = 1; i < argc; i++) {
        if (common_arg(&opts, argc, argv, &i))
            continue;
        if (strcmp(argv[i], "--pi") == 0)
            pi = 1;
        else
            usage_error(argv[i]);
    }

    init_mutex(&lock_a, pi);
    init_mutex(&lock_b, pi);
    init_mutex(&lock_c, pi);
    pthread_barrier_init(&start_barrier, NULL, 3);
    pthread_barrier_init(&held_barrier, NULL, 3);
    sem_init(&named, 0, 0);

    pthread_t a, b, healthy;
    pthread_create(&healthy, NULL, healthy_main, NULL);
    pthread_create(&a, NULL, abba_a_main, NULL);
    pthread_create(&b, NULL, abba_b_main, NULL);
    for (int i = 0; i < 3; i++)
        sem_wait(&named);

    print_pid_and_main();
    printf("tid abba-a %d\n", (int)tid_a);
    printf("tid abba-b %d\n", (int)tid_b);
    printf("tid healthy %d\n", (int)tid_healthy);
    printf("lock A %p\n", (void *)&lock_a);
    printf("lock B %p\n", (void *)&lock_b);
    printf("lock C %p\n", (void *)&lock_c);
    if (opts.delay_ms > 0)
        sleep_ms(opts.delay_ms);

    pthread_barrier_wait(&start_barrier);
    pthread_barrier_wait(&held_barrier);
    // Both second locks are on their way; READY once the kernel holds both threads.
    wait_in_syscall(tid_a, SYS_futex);
    wait_in_syscall(tid_b, SYS_futex);
    sleep_ms(100);
    printf("READY\n");

    await_abba_a(a);
    return 0;
}
