// debuglink_wait: blocks once in a function that only its debug information names.
//
// `tests/tests/frames.rs` copies this binary, splits its debug information into a separate
// file (`objcopy --only-keep-debug`), strips the copy and links the two (`.gnu_debuglink`,
// build id), then checks that the tracer names `debuglink_only_wait` exactly when it can find
// the debug file. The function is static, so the stripped binary's dynamic symbols do not name
// it; it issues the syscall itself (inline `syscall`), so it is the innermost user frame.
//
// Usage: debuglink_wait [MS]   sleeps MS milliseconds (default 300) in debuglink_only_wait.
// x86_64 only (raw syscall number and the `syscall` instruction).

#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>

static __attribute__((noinline)) long debuglink_only_wait(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"((long)SYS_nanosleep), "D"(&ts), "S"(0L)
                     : "rcx", "r11", "memory");
    return ret;
}

int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 300;
    return debuglink_only_wait(ms) == 0 ? 0 : 1;
}
