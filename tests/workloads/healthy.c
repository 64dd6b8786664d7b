// healthy: a control for `stallwatch watch` tests; nothing here is stuck.
//
// Every thread either makes progress or waits legitimately:
//   timer       20 ms nanosleeps, writes the eventfd every 200 ms;
//   epoll-loop  epoll_wait (100 ms timeout) on that eventfd, reading it when ready;
//   cv-waiter   pthread_cond_wait (no timeout), signalled every 50 ms by cv-signal;
//   pool-0..2   idle workers in pthread_cond_wait on a work queue nobody ever fills;
//   mutex-0/1   contend briefly on one mutex: lock, 1 ms of "work", unlock, 5 ms pause.
// main blocks in pthread_join(timer). A watchdog must report none of this as a stall; only
// pool workers and main (and at most cv-waiter between signals) stay off-CPU for long.
//
// Output: see watch_common.h; roles main, timer, epoll-loop, cv-waiter, cv-signal,
// pool-0..pool-2, mutex-0, mutex-1; `lock <name>` for cv, queue and contended; READY once every
// thread runs its loop.

#include "watch_common.h"

#include <semaphore.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#define POOL_WORKERS 3
#define MUTEX_THREADS 2

static int event_fd, epoll_fd;
static sem_t named; // posted by each thread once its tid is known
static sem_t gate;  // posted by main (once per thread) after the delay

static pthread_mutex_t cv_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned long cv_generation;

static pthread_mutex_t queue_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cv = PTHREAD_COND_INITIALIZER;
static int queue_len; // always 0: the pool never gets work

static pthread_mutex_t contended = PTHREAD_MUTEX_INITIALIZER;

static void sleep_ns(long ns) {
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

// Each blocking call sits in its own noinline function; the empty asm after the call keeps it
// from becoming a tail call, so the function stays a frame on the blocked stack.

__attribute__((noinline)) void timer_sleep(void) {
    sleep_ns(20 * 1000 * 1000L);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) int epoll_wait_for_tick(void) {
    struct epoll_event ev;
    int n = epoll_wait(epoll_fd, &ev, 1, 100);
    __asm__ volatile("" ::: "memory");
    return n;
}

__attribute__((noinline)) void cv_wait_for_signal(void) {
    pthread_cond_wait(&cv, &cv_mutex);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void cv_signal_sleep(void) {
    sleep_ns(50 * 1000 * 1000L);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void pool_wait_for_work(void) {
    pthread_cond_wait(&queue_cv, &queue_mutex);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void mutex_take(void) {
    pthread_mutex_lock(&contended);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void mutex_work(void) {
    sleep_ns(1 * 1000 * 1000L);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void mutex_pause(void) {
    sleep_ns(5 * 1000 * 1000L);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void join_timer(pthread_t thread) {
    pthread_join(thread, NULL);
    __asm__ volatile("" ::: "memory");
}

static void *timer_main(void *arg) {
    (void)arg;
    for (unsigned n = 1;; n++) {
        timer_sleep();
        if (n % 10 == 0) {
            uint64_t one = 1;
            if (write(event_fd, &one, sizeof one) != sizeof one)
                perror("eventfd write");
        }
    }
    return NULL;
}

static void *epoll_main(void *arg) {
    (void)arg;
    for (;;) {
        if (epoll_wait_for_tick() > 0) {
            uint64_t count;
            if (read(event_fd, &count, sizeof count) != sizeof count)
                perror("eventfd read");
        }
    }
    return NULL;
}

static void *cv_waiter_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&cv_mutex);
    for (unsigned long seen = cv_generation;;) {
        while (cv_generation == seen)
            cv_wait_for_signal();
        seen = cv_generation;
    }
    return NULL;
}

static void *cv_signal_main(void *arg) {
    (void)arg;
    for (;;) {
        cv_signal_sleep();
        pthread_mutex_lock(&cv_mutex);
        cv_generation++;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&cv_mutex);
    }
    return NULL;
}

static void *pool_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&queue_mutex);
    for (;;) {
        while (queue_len == 0)
            pool_wait_for_work();
        queue_len--; // never reached
    }
    return NULL;
}

static void *mutex_main(void *arg) {
    (void)arg;
    for (;;) {
        mutex_take();
        mutex_work();
        pthread_mutex_unlock(&contended);
        mutex_pause();
    }
    return NULL;
}

struct role {
    char name[16];
    void *(*main)(void *);
    pid_t tid;
    pthread_t thread;
};

// Names the thread, reports its tid, waits for the gate, then runs its loop.
static void *thread_start(void *arg) {
    struct role *r = arg;
    r->tid = name_self(r->name);
    sem_post(&named);
    sem_wait(&gate);
    return r->main(NULL);
}

int main(int argc, char **argv) {
    struct common_opts opts;
    common_start_with_args(&opts, argc, argv);
    sem_init(&named, 0, 0);
    sem_init(&gate, 0, 0);
    event_fd = eventfd(0, EFD_CLOEXEC);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (event_fd < 0 || epoll_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, event_fd, &ev) != 0) {
        perror("eventfd/epoll setup");
        return 1;
    }

    struct role roles[] = {
        {"timer", timer_main},    {"epoll-loop", epoll_main}, {"cv-waiter", cv_waiter_main},
        {"cv-signal", cv_signal_main}, {"pool-0", pool_main},      {"pool-1", pool_main},
        {"pool-2", pool_main},    {"mutex-0", mutex_main},    {"mutex-1", mutex_main},
    };
    const int n = sizeof roles / sizeof roles[0];
    for (int i = 0; i < n; i++)
        pthread_create(&roles[i].thread, NULL, thread_start, &roles[i]);
    for (int i = 0; i < n; i++)
        sem_wait(&named);

    print_pid_and_main();
    for (int i = 0; i < n; i++)
        printf("tid %s %d\n", roles[i].name, (int)roles[i].tid);
    printf("lock cv %p\n", (void *)&cv_mutex);
    printf("lock queue %p\n", (void *)&queue_mutex);
    printf("lock contended %p\n", (void *)&contended);
    if (opts.delay_ms > 0)
        sleep_ms(opts.delay_ms);

    for (int i = 0; i < n; i++)
        sem_post(&gate);
    // Let every loop run once; the pool workers and cv-waiter reach their condvar waits.
    for (int i = 0; i < n; i++)
        if (roles[i].main == pool_main || roles[i].main == cv_waiter_main)
            wait_in_syscall(roles[i].tid, SYS_futex);
    sleep_ms(100);
    printf("READY\n");

    join_timer(roles[0].thread);
    return 0;
}
