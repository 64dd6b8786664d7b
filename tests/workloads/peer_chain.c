// peer_chain: a client process waiting for replies from a server process on TCP loopback, for
// the `stallwatch watch` tests of wait chains across processes (tests/tests/chains.rs).
//
// Modes (first argument):
//   server-deadlock  Threads worker-1 and worker-2 deadlock ABBA: worker-1 holds mutex M and
//                    waits for M2 (in lock_m2_holding_m), worker-2 holds M2 and waits for M (in
//                    lock_m_holding_m2). Thread acceptor accepts connections; for each it starts
//                    a thread handler-N that reads the request and then takes M to answer it
//                    (in handle_request): it blocks behind the deadlock. main joins acceptor.
//                    Prints `tid handler-N TID` as each handler starts.
//   server-hold      One thread (main) serves in a select() loop without timeout: it accepts,
//                    reads each request and keeps it unanswered (a blocking queue pop with an
//                    empty queue: the answer comes when there is something to pop).
//   client           `--port N`: threads client-0 and client-1 each connect to 127.0.0.1:N,
//                    send a request and block in recv() in wait_for_reply. main joins
//                    client-0.
//
// Output: see watch_common.h (`port N` for the servers; locks M and M2), READY once the
// situation is established (the workers in futex, the server in select, the clients in
// recvfrom).

#include "watch_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/select.h>
#include <sys/socket.h>

#define CLIENTS 2
#define MAX_FDS 64

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t m2 = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold;
static int listen_fd = -1;
static int port_arg;

// Each blocking call sits in its own noinline function; the empty asm after the call keeps it
// from becoming a tail call, so the function stays a frame on the blocked stack.

__attribute__((noinline)) void lock_m2_holding_m(void) {
    pthread_mutex_lock(&m2);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void lock_m_holding_m2(void) {
    pthread_mutex_lock(&m);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void handle_request(void) {
    pthread_mutex_lock(&m);
    __asm__ volatile("" ::: "memory");
    pthread_mutex_unlock(&m);
}

__attribute__((noinline)) long wait_for_reply(int fd) {
    char byte;
    long n = recv(fd, &byte, 1, 0);
    __asm__ volatile("" ::: "memory");
    return n;
}

__attribute__((noinline)) int wait_for_requests(int nfds, fd_set *readable) {
    int n = select(nfds, readable, NULL, NULL, NULL);
    __asm__ volatile("" ::: "memory");
    return n;
}

static void *worker_1(void *arg) {
    (void)arg;
    printf("tid worker-1 %d\n", (int)name_self("worker-1"));
    pthread_mutex_lock(&m);
    pthread_barrier_wait(&both_hold);
    lock_m2_holding_m();
    return NULL;
}

static void *worker_2(void *arg) {
    (void)arg;
    printf("tid worker-2 %d\n", (int)name_self("worker-2"));
    pthread_mutex_lock(&m2);
    pthread_barrier_wait(&both_hold);
    lock_m_holding_m2();
    return NULL;
}

static void *handler_main(void *arg) {
    static int handlers;
    int fd = (int)(long)arg;
    char role[16];
    snprintf(role, sizeof role, "handler-%d", __atomic_fetch_add(&handlers, 1, __ATOMIC_SEQ_CST));
    printf("tid %s %d\n", role, (int)name_self(role));
    char request[64];
    if (recv(fd, request, sizeof request, 0) > 0)
        handle_request();
    return NULL;
}

static void *acceptor_main(void *arg) {
    (void)arg;
    printf("tid acceptor %d\n", (int)name_self("acceptor"));
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t handler;
        pthread_create(&handler, NULL, handler_main, (void *)(long)fd);
        pthread_detach(handler);
    }
    return NULL;
}

// Binds 127.0.0.1:0, prints `port N`.
static void listen_loopback(void) {
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, len) != 0 ||
        listen(listen_fd, 16) != 0 || getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("server listen");
        exit(1);
    }
    printf("port %d\n", ntohs(addr.sin_port));
}

static void server_deadlock(void) {
    pthread_barrier_init(&both_hold, NULL, 2);
    printf("lock M %p\n", (void *)&m);
    printf("lock M2 %p\n", (void *)&m2);
    pthread_t w1, w2, acceptor;
    pthread_create(&w1, NULL, worker_1, NULL);
    pthread_create(&w2, NULL, worker_2, NULL);
    // Both workers block for ever: wait until both sit in the kernel.
    for (int i = 0; i < 500 && (m.__data.__lock != 2 || m2.__data.__lock != 2); i++)
        sleep_ms(10);
    listen_loopback();
    pthread_create(&acceptor, NULL, acceptor_main, NULL);
    sleep_ms(100);
    printf("READY\n");
    pthread_join(acceptor, NULL);
}

static void server_hold(void) {
    listen_loopback();
    int fds[MAX_FDS], count = 0;
    printf("READY\n");
    for (;;) {
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(listen_fd, &readable);
        int nfds = listen_fd + 1;
        for (int i = 0; i < count; i++) {
            if (fds[i] >= 0) {
                FD_SET(fds[i], &readable);
                if (fds[i] + 1 > nfds)
                    nfds = fds[i] + 1;
            }
        }
        if (wait_for_requests(nfds, &readable) <= 0)
            continue;
        if (FD_ISSET(listen_fd, &readable) && count < MAX_FDS)
            fds[count++] = accept(listen_fd, NULL, NULL);
        for (int i = 0; i < count; i++) {
            char request[64];
            // Read the request and keep it: the queue is empty, the answer will come later.
            if (fds[i] >= 0 && FD_ISSET(fds[i], &readable) &&
                recv(fds[i], request, sizeof request, 0) <= 0) {
                close(fds[i]);
                fds[i] = -1;
            }
        }
    }
}

static pid_t tid_client[CLIENTS];

static void *client_main(void *arg) {
    long index = (long)arg;
    char role[16];
    snprintf(role, sizeof role, "client-%ld", index);
    tid_client[index] = name_self(role);
    printf("tid %s %d\n", role, (int)tid_client[index]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port_arg)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("client connect");
        exit(1);
    }
    const char request[] = "GET /answer\n";
    if (send(fd, request, sizeof request - 1, 0) < 0) {
        perror("client send");
        exit(1);
    }
    long n = wait_for_reply(fd);
    fprintf(stderr, "%s: recv returned %ld\n", role, n);
    return NULL;
}

static void client(void) {
    pthread_t clients[CLIENTS];
    for (long i = 0; i < CLIENTS; i++)
        pthread_create(&clients[i], NULL, client_main, (void *)i);
    for (int i = 0; i < CLIENTS; i++) {
        while (__atomic_load_n(&tid_client[i], __ATOMIC_SEQ_CST) == 0)
            sleep_ms(1);
        wait_in_syscall(tid_client[i], SYS_recvfrom);
    }
    sleep_ms(100);
    printf("READY\n");
    pthread_join(clients[0], NULL);
}

int main(int argc, char **argv) {
    struct common_opts opts;
    common_start(&opts);
    if (argc < 2) {
        fprintf(stderr, "usage: peer_chain server-deadlock|server-hold|client --port N\n");
        return 2;
    }
    const char *mode = argv[1];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port_arg = (int)strtol(argv[++i], NULL, 10);
        else if (!common_arg(&opts, argc, argv, &i))
            usage_error(argv[i]);
    }
    print_pid_and_main();
    if (opts.delay_ms > 0)
        sleep_ms(opts.delay_ms);
    if (strcmp(mode, "server-deadlock") == 0)
        server_deadlock();
    else if (strcmp(mode, "server-hold") == 0)
        server_hold();
    else if (strcmp(mode, "client") == 0 && port_arg > 0)
        client();
    else
        usage_error(mode);
    return 0;
}
