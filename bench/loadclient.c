/*
 * The compiled sensor load client of bench/ingest.py (built and driven by
 * bench/cload.py; not meant to be run by hand).
 *
 * N connections to 127.0.0.1:PORT from one thread (epoll), each keeping a
 * window of unanswered lines, or paced at a total rate, round robin, the
 * window still capping each connection. The lines are bench/load.py's,
 * byte for byte: seed lines whose timestamp names the line (line k of
 * connection n is stamped k * 1000 + n microseconds after midnight), or
 * lines ending in the reading id <tag>-<n>-<k>.
 *
 *   loadclient PORT CONNECTIONS WINDOW seed|ids TAG TIME_LIMIT_S OUT_PREFIX
 *
 * WINDOW is the largest window a command may ask for.
 *
 * Commands, one a line on stdin:
 *   pipeline WINDOW BUDGET         start sending, WINDOW unanswered a connection
 *   pace RATE TICK WINDOW BUDGET   start sending RATE lines/s in all
 *   record / unrecord              start / stop keeping each answer's latency
 *                                  (unrecord answers "recorded OKS SECONDS")
 *   stop                           stop sending; "drained SENT ACKED HELD_BACK
 *                                  ERR_COPIES" once every line sent is answered
 *                                  (ERR_COPIES: answers "ERR copies: ...")
 *   close                          write OUT_PREFIX.idx and .lat, "closed", exit
 * Reports on stdout: "connected N", "error CONN LINE" (the first 10 answers
 * other than OK), "lost CONN REASON", "fatal REASON" (then exit 2).
 *
 * OUT_PREFIX.idx: per connection, int64 number, sent, acked, then acked
 * int64 entry_index values (-1: not OK). OUT_PREFIX.lat: the recorded
 * latencies, double seconds. Bounded: BUDGET lines at most, and it exits
 * by itself after TIME_LIMIT_S seconds or when stdin closes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define SPREAD 1000
#define IN_SIZE 65536
#define ID_PREFIX "Temperature,39C,2026-11-28 10:00:00.123456,"

typedef struct {
    int fd, number, lost, want_out;
    int64_t sent, acked;
    double *ring;           /* send time of each unanswered line, by seq % cap */
    int64_t *idx;           /* entry_index of each answer */
    size_t idx_cap;
    char in[IN_SIZE];
    size_t in_len;
    char *out;
    size_t out_len, out_cap;
    char prefix[160];
    int prefix_len;
} Conn;

static Conn *conns;
static int nconn, seed_lines, epfd;
static int64_t window, budget, held_back, recorded_ok, err_copies;
static int sending, pacing, recording, stopping, closing, errors_told;
static double rate, tick, pace_t0, record_t0, deadline, next_tick;
static int64_t pace_due, pace_next;
static double *lat;
static size_t lat_len, lat_cap;
static char cmd[4096];
static size_t cmd_len;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fatal(const char *what) {
    printf("fatal %s: %s\n", what, errno ? strerror(errno) : "");
    fflush(stdout);
    exit(2);
}

static void *grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 1024;
    while (n < need) n *= 2;
    p = realloc(p, n * size);
    if (!p) fatal("out of memory");
    *cap = n;
    return p;
}

static void want_out(Conn *c, int on) {
    if (c->want_out == on || c->fd < 0) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

static void flush_out(Conn *c) {
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t k = write(c->fd, c->out + done, c->out_len - done);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return; /* the read side reports the loss */
        }
        done += (size_t)k;
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    want_out(c, c->out_len > 0);
}

static void send_lines(Conn *c, int64_t n) {
    if (n > budget) n = budget;
    if (n <= 0 || c->lost) return;
    budget -= n;
    c->out = grow(c->out, &c->out_cap, c->out_len + (size_t)n * 96, 1);
    double t = now();
    for (int64_t i = c->sent; i < c->sent + n; i++) {
        char *p = c->out + c->out_len;
        int len;
        if (seed_lines) {
            int64_t us = i * SPREAD + c->number;
            int64_t seconds = us / 1000000, micro = us % 1000000;
            len = sprintf(p, "Temperature,39C,2026-11-28 %02lld:%02lld:%02lld.%06lld\n",
                          (long long)(seconds / 3600), (long long)(seconds / 60 % 60),
                          (long long)(seconds % 60), (long long)micro);
        } else {
            memcpy(p, c->prefix, c->prefix_len);
            len = c->prefix_len + sprintf(p + c->prefix_len, "%lld\n", (long long)i);
        }
        c->out_len += len;
        c->ring[i % window] = t;
    }
    c->sent += n;
    flush_out(c);
}

static int all_answered(void) {
    for (int i = 0; i < nconn; i++)
        if (!conns[i].lost && conns[i].acked != conns[i].sent) return 0;
    return 1;
}

static void maybe_drained(void) {
    if (stopping == 1 && all_answered()) {
        int64_t sent = 0, acked = 0;
        for (int i = 0; i < nconn; i++) { sent += conns[i].sent; acked += conns[i].acked; }
        printf("drained %lld %lld %lld %lld\n", (long long)sent, (long long)acked,
               (long long)held_back, (long long)err_copies);
        fflush(stdout);
        stopping = 2;
    }
}

static void lost(Conn *c, const char *why) {
    if (c->lost) return;
    c->lost = 1;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (!closing) { printf("lost %d %s\n", c->number, why); fflush(stdout); }
    maybe_drained();
}

static void answers(Conn *c, double t) {
    char *start = c->in, *end = c->in + c->in_len, *nl;
    int64_t n = 0;
    while ((nl = memchr(start, '\n', end - start)) != NULL) {
        int64_t value = -1;
        if (nl - start > 3 && memcmp(start, "OK ", 3) == 0) {
            value = 0;
            for (char *q = start + 3; q < nl; q++) {
                if (*q < '0' || *q > '9') { value = -1; break; }
                value = value * 10 + (*q - '0');
            }
        }
        if (value < 0 && nl - start >= 10 && memcmp(start, "ERR copies", 10) == 0) err_copies++;
        if (value < 0 && errors_told < 10) {
            errors_told++;
            printf("error %d %.*s\n", c->number, (int)(nl - start > 200 ? 200 : nl - start), start);
            fflush(stdout);
        }
        if (c->acked >= c->sent) {
            if (errors_told < 10) {
                errors_told++;
                printf("error %d (an answer to no line)\n", c->number);
                fflush(stdout);
            }
        } else {
            c->idx = grow(c->idx, &c->idx_cap, (size_t)c->acked + 1, sizeof(int64_t));
            c->idx[c->acked] = value;
            if (recording) {
                lat = grow(lat, &lat_cap, lat_len + 1, sizeof(double));
                lat[lat_len++] = t - c->ring[c->acked % window];
                if (value >= 0) recorded_ok++;
            }
            c->acked++;
            n++;
        }
        start = nl + 1;
    }
    c->in_len = end - start;
    memmove(c->in, start, c->in_len);
    if (sending && !pacing) send_lines(c, n);
    maybe_drained();
}

static void readable(Conn *c) {
    for (;;) {
        if (c->in_len == IN_SIZE) { lost(c, "an answer longer than 64 KiB"); return; }
        ssize_t k = read(c->fd, c->in + c->in_len, IN_SIZE - c->in_len);
        if (k > 0) { c->in_len += k; answers(c, now()); continue; }
        if (k == 0) { lost(c, "closed by the node"); return; }
        if (errno == EAGAIN || errno == EINTR) return;
        lost(c, strerror(errno));
        return;
    }
}

static void pace_tick(void) {
    int64_t due = (int64_t)(rate * (now() - pace_t0)) - pace_due;
    if (due <= 0) return;
    pace_due += due;
    int64_t per = due / nconn, extra = due % nconn;
    for (int64_t k = 0; k < nconn; k++) {
        Conn *c = &conns[(pace_next + k) % nconn];
        int64_t n = per + (k < extra ? 1 : 0);
        int64_t room = window - (c->sent - c->acked);
        if (n > room) { held_back++; n = room > 0 ? room : 0; }
        if (n) send_lines(c, n);
    }
    pace_next = (pace_next + extra) % nconn;
}

static void write_results(const char *prefix) {
    char path[4096];
    snprintf(path, sizeof path, "%s.idx", prefix);
    FILE *f = fopen(path, "wb");
    if (!f) fatal("cannot write the indexes");
    for (int i = 0; i < nconn; i++) {
        int64_t head[3] = {conns[i].number, conns[i].sent, conns[i].acked};
        fwrite(head, sizeof head, 1, f);
        if (conns[i].acked) fwrite(conns[i].idx, sizeof(int64_t), conns[i].acked, f);
    }
    if (fclose(f)) fatal("cannot write the indexes");
    snprintf(path, sizeof path, "%s.lat", prefix);
    f = fopen(path, "wb");
    if (!f) fatal("cannot write the latencies");
    if (lat_len) fwrite(lat, sizeof(double), lat_len, f);
    if (fclose(f)) fatal("cannot write the latencies");
}

static void command(char *line, const char *prefix) {
    long long w, b;
    double r, t;
    if (sscanf(line, "pipeline %lld %lld", &w, &b) == 2) {
        if (w > window) { errno = 0; fatal("pipeline window above the ring size"); }
        budget = b; sending = 1; pacing = 0;
        for (int i = 0; i < nconn; i++) send_lines(&conns[i], w);
    } else if (sscanf(line, "pace %lf %lf %lld %lld", &r, &t, &w, &b) == 4) {
        if (w > window) { errno = 0; fatal("pace window above the ring size"); }
        rate = r; tick = t; budget = b; sending = 1; pacing = 1;
        pace_t0 = now(); pace_due = 0;
        pace_tick();
        next_tick = pace_t0 + tick;
    } else if (strcmp(line, "record") == 0) {
        recording = 1; recorded_ok = 0; lat_len = 0; record_t0 = now();
    } else if (strcmp(line, "unrecord") == 0) {
        recording = 0;
        printf("recorded %lld %.6f\n", (long long)recorded_ok, now() - record_t0);
        fflush(stdout);
    } else if (strcmp(line, "stop") == 0) {
        sending = 0; pacing = 0; stopping = 1;
        maybe_drained();
    } else if (strcmp(line, "close") == 0) {
        closing = 1;
        for (int i = 0; i < nconn; i++) if (!conns[i].lost) close(conns[i].fd);
        write_results(prefix);
        printf("closed\n");
        fflush(stdout);
        exit(0);
    } else {
        errno = 0;
        fatal("unknown command");
    }
}

static void commands(const char *prefix) {
    ssize_t k = read(0, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
    if (k <= 0) { errno = 0; fatal("stdin closed"); }
    cmd_len += k;
    char *start = cmd, *nl;
    while ((nl = memchr(start, '\n', cmd + cmd_len - start)) != NULL) {
        *nl = 0;
        command(start, prefix);
        start = nl + 1;
    }
    cmd_len = cmd + cmd_len - start;
    memmove(cmd, start, cmd_len);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: loadclient PORT CONNECTIONS WINDOW seed|ids TAG TIME_LIMIT_S OUT_PREFIX\n");
        return 2;
    }
    int port = atoi(argv[1]);
    nconn = atoi(argv[2]);
    window = atoll(argv[3]);
    seed_lines = strcmp(argv[4], "seed") == 0;
    const char *tag = argv[5], *prefix = argv[7];
    deadline = now() + atof(argv[6]);
    alarm((unsigned)atof(argv[6]) + 30);
    if (nconn < 1 || window < 1 || port < 1) { errno = 0; fatal("bad arguments"); }
    conns = calloc(nconn, sizeof(Conn));
    epfd = epoll_create1(0);
    if (!conns || epfd < 0) fatal("setup");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < nconn; i++) {
        Conn *c = &conns[i];
        c->number = i;
        c->ring = calloc(window, sizeof(double));
        if (!c->ring) fatal("out of memory");
        c->prefix_len = snprintf(c->prefix, sizeof c->prefix, "%s%s-%d-", ID_PREFIX, tag, i);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) fatal("socket");
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) fatal("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) fatal("epoll_ctl");
        /* A few at a time, so the node's accept backlog never overflows. */
        if (i % 50 == 49) usleep(20000);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0) fatal("epoll_ctl stdin");
    printf("connected %d\n", nconn);
    fflush(stdout);
    struct epoll_event events[256];
    for (;;) {
        double t = now();
        if (t > deadline) { errno = 0; fatal("time limit"); }
        int timeout = 100;
        if (pacing) {
            if (t >= next_tick) {
                pace_tick();
                next_tick = next_tick + tick > t ? next_tick + tick : t + tick;
            }
            timeout = (int)((next_tick - t) * 1000) + 1;
        }
        int n = epoll_wait(epfd, events, 256, timeout);
        if (n < 0 && errno != EINTR) fatal("epoll_wait");
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c == NULL) { commands(prefix); continue; }
            if (c->lost) continue;
            if (events[i].events & EPOLLOUT) flush_out(c);
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
        }
    }
}
