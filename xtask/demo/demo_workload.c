/*
 * Demo workload for `cargo xtask demo`: a few named threads that spend ~5 s blocked in
 * recognizable, named functions, so the off-CPU flame graph has obvious towers:
 *
 *   worker-0..3   wait_for_job()    -> pthread_cond_wait, fed by "producer" every 50 ms
 *   producer      produce_jobs()    -> nanosleep between jobs
 *   sleeper       take_a_nap()      -> nanosleep 200 ms
 *   io-wait       wait_for_bytes()  -> read() on a pipe fed by "io-feeder" every 250 ms
 *   io-feeder     feed_pipe()       -> nanosleep between writes
 *   epoll-loop    poll_events()     -> epoll_wait with a 300 ms timeout on an eventfd
 *   main          let_it_run()      -> nanosleep 5 s, then wait_for_threads() -> pthread_join
 *
 * Build: gcc -O2 -g -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -pthread
 * Every blocking call is followed by work on its result so -O2 cannot turn it into a tail call
 * (which would drop the named frame from the stack).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define RUN_SECONDS 5
#define WORKERS 4

static atomic_int stop;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_ready = PTHREAD_COND_INITIALIZER;
static int queued_jobs;
static int pipe_fds[2];
static volatile unsigned long sink;

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* A little CPU work so workers are not only ever off-CPU. */
static NOINLINE void crunch(int rounds)
{
    unsigned long x = 1;
    for (int i = 0; i < rounds * 10000; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink += x;
}

static NOINLINE int wait_for_job(void)
{
    pthread_mutex_lock(&lock);
    while (queued_jobs == 0 && !atomic_load(&stop))
        pthread_cond_wait(&job_ready, &lock);
    int got = queued_jobs > 0;
    if (got)
        queued_jobs--;
    pthread_mutex_unlock(&lock);
    return got;
}

static void *worker_main(void *arg)
{
    (void)arg;
    while (wait_for_job())
        crunch(5);
    return NULL;
}

static NOINLINE void produce_jobs(void)
{
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&lock);
        queued_jobs++;
        pthread_cond_signal(&job_ready);
        pthread_mutex_unlock(&lock);
        sleep_ms(50);
    }
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&job_ready);
    pthread_mutex_unlock(&lock);
}

static void *producer_main(void *arg)
{
    (void)arg;
    produce_jobs();
    return NULL;
}

static NOINLINE long take_a_nap(void)
{
    struct timespec ts = { 0, 200 * 1000000L };
    int rc = nanosleep(&ts, NULL);
    sink += (unsigned long)rc;
    return rc;
}

static void *sleeper_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop))
        take_a_nap();
    return NULL;
}

static NOINLINE ssize_t wait_for_bytes(void)
{
    char buf[16];
    ssize_t n = read(pipe_fds[0], buf, sizeof buf);
    if (n > 0)
        sink += (unsigned char)buf[0];
    return n;
}

static void *io_wait_main(void *arg)
{
    (void)arg;
    while (wait_for_bytes() > 0)
        ;
    return NULL;
}

static NOINLINE void feed_pipe(void)
{
    while (!atomic_load(&stop)) {
        sleep_ms(250);
        if (write(pipe_fds[1], "x", 1) != 1)
            break;
    }
    close(pipe_fds[1]); /* EOF ends io-wait */
}

static void *io_feeder_main(void *arg)
{
    (void)arg;
    feed_pipe();
    return NULL;
}

static NOINLINE int poll_events(int epfd)
{
    struct epoll_event ev;
    int n = epoll_wait(epfd, &ev, 1, 300);
    sink += (unsigned long)n;
    return n;
}

static void *epoll_main(void *arg)
{
    (void)arg;
    int epfd = epoll_create1(0);
    int efd = eventfd(0, EFD_NONBLOCK); /* nobody writes it: every wait times out */
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = efd };
    epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev);
    while (!atomic_load(&stop))
        poll_events(epfd);
    close(efd);
    close(epfd);
    return NULL;
}

static NOINLINE void wait_for_threads(pthread_t *threads, int count)
{
    for (int i = 0; i < count; i++)
        pthread_join(threads[i], NULL);
    sink += (unsigned long)count;
}

static NOINLINE void let_it_run(void)
{
    sleep_ms(RUN_SECONDS * 1000);
    sink++;
}

static void start(pthread_t *slot, const char *name, void *(*fn)(void *))
{
    if (pthread_create(slot, NULL, fn, NULL) != 0) {
        perror("pthread_create");
        exit(1);
    }
    pthread_setname_np(*slot, name);
}

int main(void)
{
    pthread_t threads[WORKERS + 5];
    int count = 0;
    char name[16];

    if (pipe(pipe_fds) != 0) {
        perror("pipe");
        return 1;
    }
    for (int i = 0; i < WORKERS; i++) {
        snprintf(name, sizeof name, "worker-%d", i);
        start(&threads[count++], name, worker_main);
    }
    start(&threads[count++], "producer", producer_main);
    start(&threads[count++], "sleeper", sleeper_main);
    start(&threads[count++], "io-wait", io_wait_main);
    start(&threads[count++], "io-feeder", io_feeder_main);
    start(&threads[count++], "epoll-loop", epoll_main);

    let_it_run();
    atomic_store(&stop, 1);
    wait_for_threads(threads, count);
    printf("demo_workload: done after %d s, %d threads\n", RUN_SECONDS, count);
    return 0;
}
