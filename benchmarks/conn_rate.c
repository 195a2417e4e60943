/*
 * conn_rate: new TCP connections per second, for benchmarks/dataplane.py.
 *
 *   conn_rate server PORT THREADS          accept and close, until killed
 *   conn_rate client ADDR PORT THREADS SECONDS
 *       open and close connections to ADDR:PORT (IPv4) from THREADS threads for SECONDS;
 *       prints one line: "connections=N errors=E seconds=S"; a connect not answered
 *       within 1 s (a dropped SYN) counts as an error
 *
 * Why C: every connection is a full handshake through the node's forward hook, and the
 * point is to push tens of thousands of them per second, which a Python loop cannot.
 * The client closes with SO_LINGER 0 (a RST): no TIME_WAIT is left on its side, so its
 * ~28,000 ephemeral ports are not used up within a run at 20,000+ connections per second.
 * The server only accepts and closes: the rate measures connection setup, not a service.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static double deadline;
static atomic_long connections, errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *client(void *unused) {
    (void)unused;
    struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
    struct timeval patience = {.tv_sec = 1}; /* a dropped SYN fails after 1 s, not minutes */
    long done = 0, failed = 0;
    while (now() < deadline) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            failed++;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof patience);
        if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0)
            done++;
        else
            failed++;
        close(fd);
    }
    atomic_fetch_add(&connections, done);
    atomic_fetch_add(&errors, failed);
    return NULL;
}

static void *server(void *listener) {
    int fd = *(int *)listener;
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn >= 0)
            close(conn);
    }
    return NULL;
}

static int usage(void) {
    fprintf(stderr, "usage: conn_rate server PORT THREADS | client ADDR PORT THREADS SECONDS\n");
    return 2;
}

static int start_threads(int count, void *(*fn)(void *), void *arg, pthread_t *threads) {
    for (int i = 0; i < count; i++) {
        if (pthread_create(&threads[i], NULL, fn, arg) != 0) {
            perror("pthread_create");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "server") == 0) {
        int threads = atoi(argv[3]), one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        pthread_t pool[64];
        if (threads < 1 || threads > 64)
            return usage();
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&any, sizeof any) != 0 || listen(fd, 4096) != 0) {
            perror("bind/listen");
            return 1;
        }
        printf("ready\n");
        fflush(stdout);
        if (start_threads(threads, server, &fd, pool) != 0)
            return 1;
        pthread_join(pool[0], NULL);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "client") == 0) {
        int threads = atoi(argv[4]);
        double seconds = atof(argv[5]);
        pthread_t pool[64];
        target.sin_family = AF_INET;
        target.sin_port = htons(atoi(argv[3]));
        if (threads < 1 || threads > 64 || seconds <= 0 ||
            inet_pton(AF_INET, argv[2], &target.sin_addr) != 1)
            return usage();
        double start = now();
        deadline = start + seconds;
        if (start_threads(threads, client, NULL, pool) != 0)
            return 1;
        for (int i = 0; i < threads; i++)
            pthread_join(pool[i], NULL);
        printf("connections=%ld errors=%ld seconds=%.3f\n", atomic_load(&connections),
               atomic_load(&errors), now() - start);
        return 0;
    }
    return usage();
}
