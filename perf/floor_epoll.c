/* floor_epoll: the machine's floor for tools/loadgen.py.
 *
 * A TCP server that answers every frame of the pyengine-server protocol
 * (docs/protocol.md: a 4-byte big-endian length, then one JSON object) at
 * once, with the smallest reply the load generator counts: no engine, no
 * thread, no JSON parser. Its latency under tools/loadgen.py is what this
 * machine, its loopback and the load generator cost by themselves; the
 * benchmark states pyengine-server's figures beside it
 * (perf/loadgen_table.py --floors).
 *
 *     floor_epoll --port 0 [--host 127.0.0.1] [--server-cpu N]
 *
 * It logs "event=listening host=H port=P" on stderr, as pyengine-server does
 * (pyengine/server/process.py waits for that line), and exits 0 on SIGTERM or
 * SIGINT.
 *
 * One thread, one level-triggered epoll set. Each connection has an input
 * buffer (whole frames are answered, a partial one waits for the rest) and an
 * output buffer: the replies to all the frames of one read go out in one
 * send(), and what the socket does not take waits for EPOLLOUT. Replies, by
 * the request's "type":
 *   login      {"type":"logged_in","req_id":R,"account":A}
 *   new_order  {"type":"ack","req_id":R,"order_id":K,"seq":K}      K counts up
 *   cancel     {"type":"cancelled","req_id":R,"order_id":O,"seq":K}
 *   ping       {"type":"pong","req_id":R}
 *   other      {"type":"error","req_id":R,"code":"unsupported",...}
 * R, A and O are copied from the request as they stand (null when absent).
 * The fields are found by their "key": text, which is exact for the compact
 * JSON that loadgen sends; this is a reference point, not a JSON reader.
 * A frame of length 0 or over 64 KiB closes the connection, as the server's
 * framing rule does.
 *
 * Built on demand by perf/floor_epoll.py with the system C compiler and
 * -Wall -Wextra -Werror (see there why not with CMake).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { FLOOR_MAX_FRAME = 64 * 1024, FLOOR_READ_CHUNK = 64 * 1024, FLOOR_MAX_EVENTS = 64 };

enum floor_err { FLOOR_OK = 0, FLOOR_ENOMEM, FLOOR_ECLOSED };

/* A growable byte buffer: data[start, len) is unconsumed. */
struct floor_buf {
    char *data;
    size_t start, len, cap;
};

struct floor_conn {
    int fd;
    int want_out; /* EPOLLOUT is in the epoll set */
    struct floor_buf in, out;
};

struct floor_server {
    int listen_fd, epoll_fd;
    uint64_t next_id; /* order ids and sequence numbers */
};

static volatile sig_atomic_t floor_stop;

static void floor_on_signal(int sig)
{
    (void)sig;
    floor_stop = 1;
}

/* Room for `more` bytes after data[len]; moves the unconsumed bytes to the
 * front first. On FLOOR_ENOMEM the buffer is unchanged. */
static enum floor_err floor_buf_reserve(struct floor_buf *b, size_t more)
{
    if (b->start > 0) {
        memmove(b->data, b->data + b->start, b->len - b->start);
        b->len -= b->start;
        b->start = 0;
    }
    if (b->len + more <= b->cap)
        return FLOOR_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return FLOOR_ENOMEM;
    b->data = data;
    b->cap = cap;
    return FLOOR_OK;
}

static enum floor_err floor_buf_append(struct floor_buf *b, const char *s, size_t n)
{
    enum floor_err err = floor_buf_reserve(b, n);
    if (err != FLOOR_OK)
        return err;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return FLOOR_OK;
}

static void floor_buf_destroy(struct floor_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* The raw JSON value of "key" in body[0, n): a number, a literal or a whole
 * string with its quotes. Returns its length and sets *value, or 0 when the
 * key is not there. */
static size_t floor_field(const char *body, size_t n, const char *key, const char **value)
{
    char pattern[32];
    int plen = snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = memmem(body, n, pattern, (size_t)plen);
    if (!at)
        return 0;
    size_t i = (size_t)(at - body) + (size_t)plen;
    while (i < n && (body[i] == ' ' || body[i] == '\t'))
        i++;
    size_t j = i;
    if (j < n && body[j] == '"') {
        for (j++; j < n && body[j] != '"'; j++)
            if (body[j] == '\\')
                j++;
        if (j >= n)
            return 0; /* no closing quote */
        j++;
    } else {
        while (j < n && body[j] != ',' && body[j] != '}' && body[j] != ' ')
            j++;
    }
    if (j == i)
        return 0;
    *value = body + i;
    return j - i;
}

static int floor_is(const char *v, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(v, s, n) == 0;
}

/* Appends the reply to one request frame, with its length prefix, to `out`. */
static enum floor_err floor_answer(struct floor_server *srv, struct floor_buf *out, const char *body, size_t n)
{
    const char *type = "", *req = "null", *arg = "null";
    size_t tlen = floor_field(body, n, "type", &type);
    size_t rlen = floor_field(body, n, "req_id", &req);
    size_t alen;
    if (rlen == 0)
        rlen = 4;
    char reply[512];
    int len;
    if (floor_is(type, tlen, "\"login\"")) {
        if ((alen = floor_field(body, n, "account", &arg)) == 0)
            alen = 4;
        len = snprintf(reply + 4, sizeof reply - 4, "{\"type\":\"logged_in\",\"req_id\":%.*s,\"account\":%.*s}",
                       (int)rlen, req, (int)alen, arg);
    } else if (floor_is(type, tlen, "\"new_order\"")) {
        uint64_t id = ++srv->next_id;
        len = snprintf(reply + 4, sizeof reply - 4, "{\"type\":\"ack\",\"req_id\":%.*s,\"order_id\":%llu,\"seq\":%llu}",
                       (int)rlen, req, (unsigned long long)id, (unsigned long long)id);
    } else if (floor_is(type, tlen, "\"cancel\"")) {
        if ((alen = floor_field(body, n, "order_id", &arg)) == 0)
            alen = 4;
        uint64_t seq = ++srv->next_id;
        len = snprintf(reply + 4, sizeof reply - 4,
                       "{\"type\":\"cancelled\",\"req_id\":%.*s,\"order_id\":%.*s,\"seq\":%llu}", (int)rlen, req,
                       (int)alen, arg, (unsigned long long)seq);
    } else if (floor_is(type, tlen, "\"ping\"")) {
        len = snprintf(reply + 4, sizeof reply - 4, "{\"type\":\"pong\",\"req_id\":%.*s}", (int)rlen, req);
    } else {
        len = snprintf(reply + 4, sizeof reply - 4,
                       "{\"type\":\"error\",\"req_id\":%.*s,\"code\":\"unsupported\","
                       "\"message\":\"the floor server answers login, new_order, cancel and ping\"}",
                       (int)rlen, req);
    }
    /* A value too long for the reply (a huge req_id) is cut; the error says so. */
    if (len < 0 || (size_t)len >= sizeof reply - 4)
        len = snprintf(reply + 4, sizeof reply - 4, "{\"type\":\"error\",\"req_id\":null,\"code\":\"too_long\"}");
    uint32_t be = htonl((uint32_t)len);
    memcpy(reply, &be, 4);
    return floor_buf_append(out, reply, (size_t)len + 4);
}

/* Answers every whole frame in c->in; FLOOR_ECLOSED on a framing error. */
static enum floor_err floor_answer_frames(struct floor_server *srv, struct floor_conn *c)
{
    struct floor_buf *in = &c->in;
    while (in->len - in->start >= 4) {
        uint32_t be;
        memcpy(&be, in->data + in->start, 4);
        uint32_t n = ntohl(be);
        if (n == 0 || n > FLOOR_MAX_FRAME)
            return FLOOR_ECLOSED;
        if (in->len - in->start - 4 < n)
            break;
        enum floor_err err = floor_answer(srv, &c->out, in->data + in->start + 4, n);
        if (err != FLOOR_OK)
            return err;
        in->start += 4 + n;
    }
    if (in->start == in->len)
        in->start = in->len = 0;
    return FLOOR_OK;
}

/* Sends what the socket takes of c->out and sets EPOLLOUT while some is left. */
static enum floor_err floor_flush(struct floor_server *srv, struct floor_conn *c)
{
    struct floor_buf *out = &c->out;
    while (out->start < out->len) {
        ssize_t sent = send(c->fd, out->data + out->start, out->len - out->start, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return FLOOR_ECLOSED;
        }
        out->start += (size_t)sent;
    }
    if (out->start == out->len)
        out->start = out->len = 0;
    int want = out->len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            return FLOOR_ECLOSED;
        c->want_out = want;
    }
    return FLOOR_OK;
}

static void floor_conn_close(struct floor_conn *c)
{
    close(c->fd); /* leaves the epoll set with it */
    floor_buf_destroy(&c->in);
    floor_buf_destroy(&c->out);
    free(c);
}

static enum floor_err floor_on_readable(struct floor_server *srv, struct floor_conn *c)
{
    enum floor_err err = floor_buf_reserve(&c->in, FLOOR_READ_CHUNK);
    if (err != FLOOR_OK)
        return err;
    ssize_t got = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (got < 0)
        return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK ? FLOOR_OK : FLOOR_ECLOSED;
    if (got == 0)
        return FLOOR_ECLOSED;
    c->in.len += (size_t)got;
    err = floor_answer_frames(srv, c);
    return err == FLOOR_OK ? floor_flush(srv, c) : err;
}

static void floor_accept(struct floor_server *srv)
{
    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN: all taken; anything else: the client's loss */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct floor_conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN};
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        ev.data.ptr = c;
        if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
            floor_conn_close(c);
    }
}

/* Binds and listens; prints the listening line. Returns -1 with a message
 * on stderr when it cannot. */
static int floor_listen(struct floor_server *srv, const char *host, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "floor_epoll: not an IPv4 address: %s\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1024) < 0) {
        perror("floor_epoll: listen");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    socklen_t alen = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &alen);
    srv->listen_fd = fd;
    fprintf(stderr, "event=listening host=%s port=%d\n", host, ntohs(addr.sin_port));
    fflush(stderr);
    return 0;
}

static void floor_pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        perror("floor_epoll: server not pinned");
}

static int floor_serve(struct floor_server *srv)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &ev) < 0) {
        perror("floor_epoll: epoll_ctl");
        return 1;
    }
    struct epoll_event events[FLOOR_MAX_EVENTS];
    while (!floor_stop) {
        int n = epoll_wait(srv->epoll_fd, events, FLOOR_MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("floor_epoll: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct floor_conn *c = events[i].data.ptr;
            if (!c) {
                floor_accept(srv);
                continue;
            }
            enum floor_err err = FLOOR_OK;
            if (events[i].events & (EPOLLERR | EPOLLHUP))
                err = FLOOR_ECLOSED;
            if (err == FLOOR_OK && (events[i].events & EPOLLOUT))
                err = floor_flush(srv, c);
            if (err == FLOOR_OK && (events[i].events & EPOLLIN))
                err = floor_on_readable(srv, c);
            if (err != FLOOR_OK)
                floor_conn_close(c); /* connections still open at exit go with the process */
        }
    }
    return 0;
}

static void floor_usage(FILE *to)
{
    fprintf(to, "usage: floor_epoll --port N [--host 127.0.0.1] [--server-cpu N]\n"
                "A TCP server answering each frame of the pyengine-server protocol at once (0: any free port).\n");
}

/* The value of option `name` at argv[*i], given as "--name=V" or "--name V"
 * (then *i moves past V); NULL if argv[*i] is not that option. */
static const char *floor_option(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *v;
    int port = -1, cpu = -1;
    for (int i = 1; i < argc; i++) {
        if ((v = floor_option(argc, argv, &i, "--port")))
            port = atoi(v);
        else if ((v = floor_option(argc, argv, &i, "--host")))
            host = v;
        else if ((v = floor_option(argc, argv, &i, "--server-cpu")))
            cpu = atoi(v);
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            floor_usage(stdout);
            return 0;
        } else {
            floor_usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535) {
        floor_usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = floor_on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (cpu >= 0)
        floor_pin(cpu);
    struct floor_server srv = {.listen_fd = -1, .epoll_fd = epoll_create1(EPOLL_CLOEXEC)};
    if (srv.epoll_fd < 0) {
        perror("floor_epoll: epoll_create1");
        return 1;
    }
    if (floor_listen(&srv, host, port) < 0)
        return 1;
    int code = floor_serve(&srv);
    close(srv.listen_fd);
    close(srv.epoll_fd);
    return code;
}
