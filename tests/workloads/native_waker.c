// native_waker: a shared library (built by build.rs as libnative_waker.so) for
// py_new_threads.py. start_waker(period_us) starts a native thread that has no Python thread
// state and wakes every period_us microseconds until the process ends, counting its
// wake-ups in waker_wakeups: a thread of a Python process that profile --python never finds.
// (faulthandler's watchdog thread did the same, but its dumps read the thread list unlocked
// and crashed CPython while request threads were being created.)
#include <pthread.h>
#include <unistd.h>

volatile long waker_wakeups;

static void *wake_loop(void *arg) {
    useconds_t period_us = (useconds_t)(long)arg;
    for (;;) {
        usleep(period_us);
        __atomic_add_fetch(&waker_wakeups, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int start_waker(long period_us) {
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, wake_loop, (void *)period_us);
    if (rc == 0) pthread_detach(thread);
    return rc;
}
