// cli_client: a command-line client that polls once while connecting and then blocks in a
// synchronous recv(), for the `stallwatch watch` verdict tests (it is no event loop).
//
// Thread server listens on 127.0.0.1 (ephemeral port), accepts one connection, reads the
// request and never answers, then blocks in accept again. main, after --delay-ms, connects
// the way CLI clients with a connect timeout do (non-blocking connect(), one poll() for
// writability, the socket made blocking again), sends a request and blocks in recv() inside
// wait_for_reply() on that same socket, for ever.
//
// Output: see watch_common.h; roles main, server; `port N`; READY once main is about to call
// recv (it then sleeps in recvfrom).

#include "watch_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <semaphore.h>
#include <sys/socket.h>

static int listen_fd;
static sem_t named;
static pid_t tid_server;

__attribute__((noinline)) long wait_for_reply(int fd) {
    char byte;
    long n = recv(fd, &byte, 1, 0);
    __asm__ volatile("" ::: "memory");
    return n;
}

static void *server_main(void *arg) {
    (void)arg;
    tid_server = current_tid();
    sem_post(&named);
    int fd = accept(listen_fd, NULL, NULL);
    char request[64];
    if (fd < 0 || read(fd, request, sizeof request) <= 0)
        perror("server");
    for (;;) {
        int more = accept(listen_fd, NULL, NULL);
        if (more < 0)
            break;
    }
    return NULL;
}

// Connects with a non-blocking connect() and one poll(), as clients with a connect timeout do.
static int connect_with_timeout(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int started = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if ((started != 0 && errno != EINPROGRESS) || poll(&p, 1, 5000) != 1) {
        perror("connect");
        exit(1);
    }
    fcntl(fd, F_SETFL, flags);
    return fd;
}

int main(int argc, char **argv) {
    struct common_opts opts;
    common_start_with_args(&opts, argc, argv);
    sem_init(&named, 0, 0);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listen_fd, 4) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("listen");
        return 1;
    }
    pthread_t server;
    pthread_create(&server, NULL, server_main, NULL);
    pthread_setname_np(server, "server");
    sem_wait(&named);
    printf("pid %d\ntid main %d\ntid server %d\nport %d\n", getpid(), current_tid(), tid_server,
           ntohs(addr.sin_port));
    sleep_ms(opts.delay_ms);
    int fd = connect_with_timeout(&addr);
    if (send(fd, "GET\n", 4, 0) != 4) {
        perror("send");
        return 1;
    }
    printf("READY\n");
    wait_for_reply(fd);
    return 0;
}
