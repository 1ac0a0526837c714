/*
 * rtbench workload: the smallest HTTP server that still tells the truth.
 *
 * Every benchmark pod runs this. It must start fast and use little memory so
 * that what rtbench measures is the runtime, not the application. It prints the
 * wall-clock time at which the listening socket is ready, so probe accuracy can
 * be checked against the application's own account of when it could first
 * answer.
 *
 * Usage: server [-a ADDR] [-p PORT] [-b BODY]
 *   ADDR  address to bind (env LISTEN_ADDR, default 0.0.0.0)
 *   PORT  TCP port        (env PORT, default 8080)
 *   BODY  response body   (env BODY, default "ok")
 *
 * GET / answers 200 with the body; other paths 404; other methods 405.
 * SIGTERM or SIGINT closes the socket and exits 0.
 *
 * RTBENCH_DIE_WITH_PARENT=PID (Linux, set by the simulated cluster): be killed
 * when the process that started us exits, and exit at once if PID is no longer
 * our parent. Done here rather than between fork and exec in the parent, which
 * is unsafe in a multi-threaded parent (gRPC, thread pools).
 *
 * Output, one line on stdout once listening:
 *   rtbench-workload listening addr=127.0.0.1 port=8080 epoch_ms=1763824745123.456
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void usage(FILE *out) {
    fputs("usage: server [-a ADDR] [-p PORT] [-b BODY]\n"
          "  env LISTEN_ADDR, PORT and BODY are used when flags are absent\n",
          out);
}

static int parse_port(const char *text, int *port) {
    char *end = NULL;
    long value;
    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 1 || value > 65535) {
        return -1;
    }
    *port = (int)value;
    return 0;
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR && !stopping) {
                continue;
            }
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads the request head (up to the blank line) and answers it. One request per
 * connection keeps the server trivially correct; probes open a new connection
 * per attempt anyway. */
static void serve(int fd, const char *body) {
    char req[2048];
    size_t used = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    /* One deadline for the whole head, not per read: a client dripping a byte
     * now and then would otherwise hold this one-at-a-time server for minutes. */
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);

    while (used < sizeof(req) - 1) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long spent_ms = (now.tv_sec - start.tv_sec) * 1000L + (now.tv_nsec - start.tv_nsec) / 1000000L;
        int ready = spent_ms >= 2000 ? 0 : poll(&pfd, 1, (int)(2000 - spent_ms));
        if (ready <= 0) {
            return; /* slow or silent client: drop it */
        }
        ssize_t n = read(fd, req + used, sizeof(req) - 1 - used);
        if (n <= 0) {
            return;
        }
        used += (size_t)n;
        req[used] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL) {
            break;
        }
    }

    const char *status;
    const char *text;
    if (strncmp(req, "GET ", 4) != 0 && strncmp(req, "HEAD ", 5) != 0) {
        status = "405 Method Not Allowed";
        text = "method not allowed\n";
    } else {
        const char *path = strchr(req, ' ') + 1;
        if (strncmp(path, "/ ", 2) == 0 || strncmp(path, "/?", 2) == 0) {
            status = "200 OK";
            text = body;
        } else {
            status = "404 Not Found";
            text = "not found\n";
        }
    }
    char head[256];
    int head_len = snprintf(head, sizeof(head),
                            "HTTP/1.1 %s\r\nContent-Type: text/plain\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                            status, strlen(text));
    write_all(fd, head, (size_t)head_len);
    if (strncmp(req, "HEAD ", 5) != 0) {
        write_all(fd, text, strlen(text));
    }
}

static void die_with_parent(void) {
#ifdef __linux__
    const char *parent = getenv("RTBENCH_DIE_WITH_PARENT");
    if (parent == NULL || *parent == '\0') {
        return;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* The parent may have died before prctl: then we were re-parented already. */
    if ((long)getppid() != strtol(parent, NULL, 10)) {
        _exit(137);
    }
#endif
}

int main(int argc, char **argv) {
    die_with_parent();
    const char *addr = getenv("LISTEN_ADDR");
    const char *port_text = getenv("PORT");
    const char *body_env = getenv("BODY");
    int port = 8080;
    int opt;

    if (addr == NULL || *addr == '\0') {
        addr = "0.0.0.0";
    }
    while ((opt = getopt(argc, argv, "a:p:b:h")) != -1) {
        switch (opt) {
        case 'a':
            addr = optarg;
            break;
        case 'p':
            port_text = optarg;
            break;
        case 'b':
            body_env = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (port_text != NULL && *port_text != '\0' && parse_port(port_text, &port) != 0) {
        fprintf(stderr, "server: invalid port %s\n", port_text);
        return 2;
    }
    char body[512];
    snprintf(body, sizeof(body), "%s\n", body_env != NULL ? body_env : "ok");

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "server: invalid IPv4 address %s\n", addr);
        return 2;
    }

    struct sigaction act;
    memset(&act, 0, sizeof(act));
    act.sa_handler = on_signal; /* no SA_RESTART: accept() must return EINTR */
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        perror("server: socket");
        return 1;
    }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "server: bind %s:%d: %s\n", addr, port, strerror(errno));
        return 1;
    }
    if (listen(lfd, 128) != 0) {
        perror("server: listen");
        return 1;
    }

    /* The socket accepts connections from here on: this is the moment a probe
     * can first succeed, so it is the moment reported. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("rtbench-workload listening addr=%s port=%d epoch_ms=%lld.%03ld\n", addr, port,
           (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000L, (ts.tv_nsec / 1000L) % 1000L);
    fflush(stdout);

    while (!stopping) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE) {
                usleep(1000);
                continue;
            }
            perror("server: accept");
            break;
        }
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        serve(cfd, body);
        close(cfd);
    }
    close(lfd);
    printf("rtbench-workload stopped\n");
    fflush(stdout);
    return 0;
}
