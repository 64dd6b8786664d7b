// recv_stall: clients stuck forever in recv() on a server that never replies, for
// `stallwatch watch` tests.
//
// Thread server listens on 127.0.0.1 (ephemeral port), accepts every connection and keeps it
// open without sending, then blocks in accept again. Threads client-0..client-3 connect and
// block in recv() inside wait_for_reply(). main blocks forever in pthread_join(client-0).
//
// Output: see watch_common.h; roles main, server, client-0..client-3; `port N`; READY once all
// four clients are connected and in recvfrom.

#include "watch_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <sys/socket.h>

#define CLIENTS 4
#define MAX_ACCEPTED 64

static int listen_fd;
static sem_t named;     // posted by each thread once its tid is known
static sem_t gate;      // posted by main (once per client) after the delay
static sem_t connected; // posted by each client once connected
static pid_t tid_server, tid_client[CLIENTS];
static int accepted[MAX_ACCEPTED]; // kept open, never written

// Each blocking call sits in its own noinline function; the empty asm after the call keeps it
// from becoming a tail call, so the function stays a frame on the blocked stack.

__attribute__((noinline)) int accept_connection(void) {
    int fd = accept(listen_fd, NULL, NULL);
    __asm__ volatile("" ::: "memory");
    return fd;
}

__attribute__((noinline)) long wait_for_reply(int fd) {
    char byte;
    long n = recv(fd, &byte, 1, 0);
    __asm__ volatile("" ::: "memory");
    return n;
}

__attribute__((noinline)) void join_client(pthread_t thread) {
    pthread_join(thread, NULL);
    __asm__ volatile("" ::: "memory");
}

static void *server_main(void *arg) {
    (void)arg;
    tid_server = name_self("server");
    sem_post(&named);
    for (int n = 0;; n++) {
        int fd = accept_connection();
        if (fd >= 0 && n < MAX_ACCEPTED)
            accepted[n] = fd;
    }
    return NULL;
}

static void *client_main(void *arg) {
    long index = (long)arg;
    char role[16];
    snprintf(role, sizeof role, "client-%ld", index);
    tid_client[index] = name_self(role);
    sem_post(&named);
    sem_wait(&gate);

    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    getsockname(listen_fd, (struct sockaddr *)&addr, &len);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, len) != 0) {
        perror("client connect");
        exit(1);
    }
    sem_post(&connected);
    long n = wait_for_reply(fd);
    fprintf(stderr, "%s: recv returned %ld\n", role, n);
    return NULL;
}

// Binds 127.0.0.1:0 and returns the port the kernel chose.
static int listen_loopback(void) {
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, len) != 0 ||
        listen(listen_fd, 16) != 0 || getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("server listen");
        exit(1);
    }
    return ntohs(addr.sin_port);
}

int main(int argc, char **argv) {
    struct common_opts opts;
    common_start_with_args(&opts, argc, argv);
    sem_init(&named, 0, 0);
    sem_init(&gate, 0, 0);
    sem_init(&connected, 0, 0);
    int port = listen_loopback();

    pthread_t server, clients[CLIENTS];
    pthread_create(&server, NULL, server_main, NULL);
    for (long i = 0; i < CLIENTS; i++)
        pthread_create(&clients[i], NULL, client_main, (void *)i);
    for (int i = 0; i < CLIENTS + 1; i++)
        sem_wait(&named);

    print_pid_and_main();
    printf("tid server %d\n", (int)tid_server);
    for (int i = 0; i < CLIENTS; i++)
        printf("tid client-%d %d\n", i, (int)tid_client[i]);
    printf("port %d\n", port);
    if (opts.delay_ms > 0)
        sleep_ms(opts.delay_ms);

    for (int i = 0; i < CLIENTS; i++)
        sem_post(&gate);
    for (int i = 0; i < CLIENTS; i++)
        sem_wait(&connected);
    for (int i = 0; i < CLIENTS; i++)
        wait_in_syscall(tid_client[i], SYS_recvfrom);
    sleep_ms(100);
    printf("READY\n");

    join_client(clients[0]);
    return 0;
}
