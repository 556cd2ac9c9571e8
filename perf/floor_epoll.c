/* floor_epoll: the machine's floor for tools/loadgen.py.
 *
 * A TCP server that answers every frame of the pyengine-server protocol
 * (docs/protocol.md: a 4-byte big-endian length, then one JSON object) at
 * once, with the smallest reply the load generator counts: no engine, no
 * thread, no JSON parser (--handoff adds the engine thread's round trip:
 * see "the hand-off" below). Its latency under tools/loadgen.py is what this
 * machine, its loopback and the load generator cost by themselves; the
 * benchmark states pyengine-server's figures beside it
 * (perf/loadgen_table.py --floors).
 *
 *     floor_epoll --port 0 [--host 127.0.0.1] [--server-cpu N] [--server-spin-us N]
 *                 [--handoff [--engine-cpu N] [--ring-slots N]]
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
 * --server-spin-us N polls as pyengine-server's option of that name does:
 * for N µs after an epoll_wait that found a connection readable, it waits
 * no more but polls, yielding the CPU between polls (to the hand-off
 * thread, when it shares the CPU); the floor of a server that spins.
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
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    FLOOR_MAX_FRAME = 64 * 1024,
    FLOOR_READ_CHUNK = 64 * 1024,
    FLOOR_MAX_EVENTS = 64,
    FLOOR_REPLY_MAX = 512,
};

enum floor_err { FLOOR_OK = 0, FLOOR_ENOMEM, FLOOR_ECLOSED };

/* A growable byte buffer: data[start, len) is unconsumed. */
struct floor_buf {
    char *data;
    size_t start, len, cap;
};

struct floor_conn {
    int fd;       /* -1 once closed (kept while its replies are with the hand-off thread) */
    int want_out; /* EPOLLOUT is in the epoll set */
    struct floor_buf in, out;
    unsigned inflight;             /* --handoff: its replies on their way through the thread */
    int dirty;                     /* --handoff: on the list of connections to flush */
    struct floor_conn *next_dirty;
    struct floor_conn *next_closed; /* on the server's list of closed connections to free */
};

struct floor_handoff;

struct floor_server {
    int listen_fd, epoll_fd;
    uint64_t next_id;              /* order ids and sequence numbers */
    struct floor_handoff *handoff; /* --handoff, else NULL */
    struct floor_conn *closed;     /* closed, freed at the end of the loop's turn */
    unsigned loop_spin_us;         /* --server-spin-us: polling after a connection was readable */
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

/* Writes the reply to one request frame, with its length prefix, into
 * `reply`; returns its whole length. */
static size_t floor_reply(struct floor_server *srv, char reply[FLOOR_REPLY_MAX], const char *body, size_t n)
{
    const char *type = "", *req = "null", *arg = "null";
    size_t tlen = floor_field(body, n, "type", &type);
    size_t rlen = floor_field(body, n, "req_id", &req);
    size_t alen;
    if (rlen == 0)
        rlen = 4;
    int len;
    if (floor_is(type, tlen, "\"login\"")) {
        if ((alen = floor_field(body, n, "account", &arg)) == 0)
            alen = 4;
        len = snprintf(reply + 4, FLOOR_REPLY_MAX - 4, "{\"type\":\"logged_in\",\"req_id\":%.*s,\"account\":%.*s}",
                       (int)rlen, req, (int)alen, arg);
    } else if (floor_is(type, tlen, "\"new_order\"")) {
        uint64_t id = ++srv->next_id;
        len = snprintf(reply + 4, FLOOR_REPLY_MAX - 4, "{\"type\":\"ack\",\"req_id\":%.*s,\"order_id\":%llu,\"seq\":%llu}",
                       (int)rlen, req, (unsigned long long)id, (unsigned long long)id);
    } else if (floor_is(type, tlen, "\"cancel\"")) {
        if ((alen = floor_field(body, n, "order_id", &arg)) == 0)
            alen = 4;
        uint64_t seq = ++srv->next_id;
        len = snprintf(reply + 4, FLOOR_REPLY_MAX - 4,
                       "{\"type\":\"cancelled\",\"req_id\":%.*s,\"order_id\":%.*s,\"seq\":%llu}", (int)rlen, req,
                       (int)alen, arg, (unsigned long long)seq);
    } else if (floor_is(type, tlen, "\"ping\"")) {
        len = snprintf(reply + 4, FLOOR_REPLY_MAX - 4, "{\"type\":\"pong\",\"req_id\":%.*s}", (int)rlen, req);
    } else {
        len = snprintf(reply + 4, FLOOR_REPLY_MAX - 4,
                       "{\"type\":\"error\",\"req_id\":%.*s,\"code\":\"unsupported\","
                       "\"message\":\"the floor server answers login, new_order, cancel and ping\"}",
                       (int)rlen, req);
    }
    /* A value too long for the reply (a huge req_id) is cut; the error says so. */
    if (len < 0 || (size_t)len >= FLOOR_REPLY_MAX - 4)
        len = snprintf(reply + 4, FLOOR_REPLY_MAX - 4, "{\"type\":\"error\",\"req_id\":null,\"code\":\"too_long\"}");
    uint32_t be = htonl((uint32_t)len);
    memcpy(reply, &be, 4);
    return (size_t)len + 4;
}

static enum floor_err floor_handoff_submit(struct floor_server *srv, struct floor_conn *c, const char *body,
                                           size_t n);

static enum floor_err floor_answer_now(struct floor_server *srv, struct floor_conn *c, const char *body, size_t n)
{
    char reply[FLOOR_REPLY_MAX];
    size_t len = floor_reply(srv, reply, body, n);
    return floor_buf_append(&c->out, reply, len);
}

/* Answers every whole frame in c->in: at once, or by way of the hand-off
 * thread (--handoff). FLOOR_ECLOSED on a framing error. */
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
        const char *body = in->data + in->start + 4;
        enum floor_err err =
            srv->handoff ? floor_handoff_submit(srv, c, body, n) : floor_answer_now(srv, c, body, n);
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

/* Closes the socket; the connection itself is freed at the end of the
 * loop's turn (floor_sweep), when nothing refers to it any more: a later
 * event of the same turn, or a reply still with the hand-off thread. */
static void floor_conn_close(struct floor_server *srv, struct floor_conn *c)
{
    if (c->fd < 0)
        return;
    close(c->fd); /* leaves the epoll set with it */
    c->fd = -1;
    floor_buf_destroy(&c->in);
    floor_buf_destroy(&c->out);
    c->next_closed = srv->closed;
    srv->closed = c;
}

static void floor_sweep(struct floor_server *srv)
{
    struct floor_conn **at = &srv->closed;
    while (*at) {
        struct floor_conn *c = *at;
        if (c->inflight) {
            at = &c->next_closed;
        } else {
            *at = c->next_closed;
            free(c);
        }
    }
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
        if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
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

/* The highest CPU this process may run on, as pyengine-server's engine
 * thread takes by default; -1 if none is known. */
static int floor_last_cpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return -1;
    for (int cpu = CPU_SETSIZE - 1; cpu >= 0; cpu--)
        if (CPU_ISSET(cpu, &set))
            return cpu;
    return -1;
}

static void floor_pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        perror("floor_epoll: server not pinned");
}

/* ---- the hand-off (--handoff) ---------------------------------------------
 *
 * pyengine-server's path between a request and its reply crosses to the
 * engine thread and back: an input ring, the thread's wake-up, an output
 * ring, the event loop's wake-up by an eventfd. --handoff adds that round
 * trip, and nothing else, to this floor: each reply is built as before, then
 * sent through a thread that only moves it from one ring to the other; the
 * main thread writes it out when it comes back. The wake-up protocol is the
 * engine thread's (csrc/runner.c): each side says it sleeps, then looks at
 * its ring again, and the other writes its eventfd only when it has said so
 * (a full fence between on both sides); the thread polls its ring for
 * FLOOR_SPIN_US before it sleeps, after a burst of FLOOR_SPIN_MIN_BURST
 * replies or more, as the engine thread does by default, and not at all
 * when it shares the main thread's CPU (as the engine thread does not,
 * pinned to the event loop's CPU). The main thread pushes the replies of a
 * turn of its loop into the ring at its end, after every ready socket, and
 * wakes the thread then, as the server pushes its commands once a turn.
 */

enum { FLOOR_RING_SLOTS = 8192, FLOOR_SPIN_US = 50, FLOOR_SPIN_MIN_BURST = 8 };

struct floor_job {
    struct floor_conn *c;
    size_t len;
    char reply[FLOOR_REPLY_MAX];
};

/* Single producer, single consumer; `head` and `tail` count up for ever. */
struct floor_ring {
    _Alignas(64) atomic_size_t head; /* the producer's */
    _Alignas(64) atomic_size_t tail; /* the consumer's */
    struct floor_job *slot;
    size_t slots; /* a power of two */
};

struct floor_handoff {
    struct floor_ring in, out;                /* main -> thread, thread -> main */
    int thread_fd, main_fd;                   /* the eventfds each side is woken by */
    _Alignas(64) atomic_int thread_asleep;    /* the thread sleeps on thread_fd */
    _Alignas(64) atomic_int main_waiting;     /* the main thread waits for main_fd */
    atomic_int stop;
    int cpu;                                  /* the thread's CPU; -1: not pinned */
    unsigned spin_us;                         /* its polling before it sleeps */
    size_t submitted;                         /* jobs written in this turn, not pushed yet (main thread) */
    struct floor_conn *dirty;                 /* connections with replies to flush (main thread) */
    pthread_t thread;
};

/* The free slot `ahead` places past the head (the slots before it written,
 * not pushed yet), or NULL when the ring has no room for it (producer). */
static struct floor_job *floor_ring_back(struct floor_ring *r, size_t ahead)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed) + ahead;
    if (head - atomic_load_explicit(&r->tail, memory_order_acquire) >= r->slots)
        return NULL;
    return &r->slot[head & (r->slots - 1)];
}

/* Hand the consumer the `n` slots written past the head. */
static void floor_ring_push(struct floor_ring *r, size_t n)
{
    atomic_store_explicit(&r->head, atomic_load_explicit(&r->head, memory_order_relaxed) + n, memory_order_release);
}

/* The oldest job, or NULL when the ring is empty (consumer). */
static struct floor_job *floor_ring_front(struct floor_ring *r)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (tail == atomic_load_explicit(&r->head, memory_order_acquire))
        return NULL;
    return &r->slot[tail & (r->slots - 1)];
}

static void floor_ring_pop(struct floor_ring *r)
{
    atomic_store_explicit(&r->tail, atomic_load_explicit(&r->tail, memory_order_relaxed) + 1, memory_order_release);
}

static void floor_signal(int fd)
{
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Wakes the side that said it sleeps on `flag`; the caller has just published. */
static void floor_wake(atomic_int *flag, int fd)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(flag, memory_order_relaxed) && atomic_exchange_explicit(flag, 0, memory_order_relaxed))
        floor_signal(fd);
}

static uint64_t floor_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The thread: moves every job of the input ring to the output ring (waiting
 * for room there), then wakes the main thread; returns how many it moved. */
static size_t floor_handoff_move(struct floor_handoff *h)
{
    size_t moved = 0;
    struct floor_job *job;
    while ((job = floor_ring_front(&h->in))) {
        struct floor_job *to;
        while (!(to = floor_ring_back(&h->out, 0))) {
            floor_wake(&h->main_waiting, h->main_fd);
            if (atomic_load_explicit(&h->stop, memory_order_relaxed))
                return moved;
            nanosleep(&(struct timespec){0, 20000}, NULL);
        }
        memcpy(to, job, offsetof(struct floor_job, reply) + job->len);
        floor_ring_push(&h->out, 1);
        floor_ring_pop(&h->in);
        moved++;
    }
    if (moved)
        floor_wake(&h->main_waiting, h->main_fd);
    return moved;
}

/* The thread, with nothing to move: poll a while after a burst, then sleep. */
static void floor_handoff_idle(struct floor_handoff *h, size_t burst)
{
    uint64_t until = floor_now_us() + h->spin_us;
    while (h->spin_us && burst >= FLOOR_SPIN_MIN_BURST && floor_now_us() < until)
        if (floor_ring_front(&h->in) || atomic_load_explicit(&h->stop, memory_order_relaxed))
            return;
    atomic_store_explicit(&h->thread_asleep, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (!floor_ring_front(&h->in) && !atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        uint64_t v;
        while (read(h->thread_fd, &v, sizeof v) < 0 && errno == EINTR)
            ;
    }
    atomic_store_explicit(&h->thread_asleep, 0, memory_order_relaxed);
}

static void *floor_handoff_thread(void *arg)
{
    struct floor_handoff *h = arg;
    if (h->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(h->cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
            fprintf(stderr, "floor_epoll: hand-off thread not pinned to CPU %d\n", h->cpu);
    }
    size_t burst = 0;
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        size_t moved = floor_handoff_move(h);
        if (moved) {
            burst += moved;
            continue;
        }
        floor_handoff_idle(h, burst);
        burst = 0;
    }
    return NULL;
}

/* The main thread: every reply back from the thread into its connection's
 * output, then each such connection flushed once; the wake-up re-armed. */
static void floor_handoff_deliver(struct floor_server *srv)
{
    struct floor_handoff *h = srv->handoff;
    for (;;) {
        struct floor_job *job;
        while ((job = floor_ring_front(&h->out))) {
            struct floor_conn *c = job->c;
            c->inflight--;
            if (c->fd >= 0 && floor_buf_append(&c->out, job->reply, job->len) != FLOOR_OK)
                floor_conn_close(srv, c);
            else if (c->fd >= 0 && !c->dirty) {
                c->dirty = 1;
                c->next_dirty = h->dirty;
                h->dirty = c;
            }
            floor_ring_pop(&h->out);
        }
        atomic_store_explicit(&h->main_waiting, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (!floor_ring_front(&h->out))
            break;
        atomic_store_explicit(&h->main_waiting, 0, memory_order_relaxed);
    }
    while (h->dirty) {
        struct floor_conn *c = h->dirty;
        h->dirty = c->next_dirty;
        c->dirty = 0;
        if (c->fd >= 0 && floor_flush(srv, c) != FLOOR_OK)
            floor_conn_close(srv, c);
    }
}

/* The main thread: push the replies written so far and wake the thread
 * for them (the end of a turn of its loop, or a full ring). */
static void floor_handoff_kick(struct floor_handoff *h)
{
    if (h->submitted) {
        floor_ring_push(&h->in, h->submitted);
        h->submitted = 0;
        floor_wake(&h->thread_asleep, h->thread_fd);
    }
}

/* The main thread: a reply to send by way of the thread, written into the
 * ring and pushed at the end of the turn. A full input ring means replies
 * are waiting to come back: push, and take them meanwhile. */
static enum floor_err floor_handoff_submit(struct floor_server *srv, struct floor_conn *c, const char *body,
                                           size_t n)
{
    struct floor_handoff *h = srv->handoff;
    struct floor_job *job;
    while (!(job = floor_ring_back(&h->in, h->submitted))) {
        floor_handoff_kick(h);
        floor_handoff_deliver(srv);
        if (c->fd < 0)
            return FLOOR_ECLOSED; /* its own flush failed meanwhile */
        sched_yield();
    }
    job->c = c;
    job->len = floor_reply(srv, job->reply, body, n);
    c->inflight++;
    h->submitted++;
    return FLOOR_OK;
}

static void floor_handoff_destroy(struct floor_handoff *h)
{
    if (h->thread_fd >= 0)
        close(h->thread_fd);
    if (h->main_fd >= 0)
        close(h->main_fd);
    free(h->in.slot);
    free(h->out.slot);
    free(h);
}

/* Creates the rings and eventfds and starts the thread; NULL with a message
 * on stderr when it cannot. */
static struct floor_handoff *floor_handoff_start(int cpu, unsigned spin_us, size_t slots)
{
    struct floor_handoff *h = calloc(1, sizeof *h);
    if (!h) {
        perror("floor_epoll: hand-off");
        return NULL;
    }
    h->cpu = cpu;
    h->spin_us = spin_us;
    h->thread_fd = eventfd(0, EFD_CLOEXEC);
    h->main_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    h->in.slots = h->out.slots = slots;
    h->in.slot = calloc(slots, sizeof *h->in.slot);
    h->out.slot = calloc(slots, sizeof *h->out.slot);
    atomic_store(&h->main_waiting, 1);
    /* The thread blocks every signal: SIGTERM is the main thread's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = h->thread_fd < 0 || h->main_fd < 0 || !h->in.slot || !h->out.slot
                 ? -1
                 : pthread_create(&h->thread, NULL, floor_handoff_thread, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        perror("floor_epoll: hand-off");
        floor_handoff_destroy(h);
        return NULL;
    }
    return h;
}

static void floor_handoff_stop(struct floor_handoff *h)
{
    atomic_store(&h->stop, 1);
    floor_signal(h->thread_fd);
    pthread_join(h->thread, NULL);
    floor_handoff_destroy(h);
}

static int floor_serve(struct floor_server *srv)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    struct epoll_event wake = {.events = EPOLLIN, .data.ptr = srv->handoff}; /* the hand-off's replies */
    if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &ev) < 0 ||
        (srv->handoff && epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->handoff->main_fd, &wake) < 0)) {
        perror("floor_epoll: epoll_ctl");
        return 1;
    }
    struct epoll_event events[FLOOR_MAX_EVENTS];
    uint64_t readable = 0; /* --server-spin-us: when a connection last was */
    while (!floor_stop) {
        int spinning = srv->loop_spin_us && floor_now_us() - readable < srv->loop_spin_us;
        int n = epoll_wait(srv->epoll_fd, events, FLOOR_MAX_EVENTS, spinning ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("floor_epoll: epoll_wait");
            return 1;
        }
        if (n == 0) {
            sched_yield(); /* a hand-off thread on this CPU runs */
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct floor_conn *c = events[i].data.ptr;
            if (!c) {
                floor_accept(srv);
                continue;
            }
            if (c == (struct floor_conn *)srv->handoff) {
                uint64_t v;
                if (read(srv->handoff->main_fd, &v, sizeof v) < 0 && errno != EAGAIN && errno != EINTR) {
                    perror("floor_epoll: eventfd");
                    return 1;
                }
                floor_handoff_deliver(srv);
                continue;
            }
            if (c->fd < 0)
                continue; /* closed earlier in this turn */
            enum floor_err err = FLOOR_OK;
            if (events[i].events & (EPOLLERR | EPOLLHUP))
                err = FLOOR_ECLOSED;
            if (err == FLOOR_OK && (events[i].events & EPOLLOUT))
                err = floor_flush(srv, c);
            if (err == FLOOR_OK && (events[i].events & EPOLLIN)) {
                if (srv->loop_spin_us)
                    readable = floor_now_us();
                err = floor_on_readable(srv, c);
            }
            if (err != FLOOR_OK)
                floor_conn_close(srv, c); /* connections still open at exit go with the process */
        }
        if (srv->handoff)
            floor_handoff_kick(srv->handoff);
        floor_sweep(srv);
    }
    return 0;
}

static void floor_usage(FILE *to)
{
    fprintf(to, "usage: floor_epoll --port N [--host 127.0.0.1] [--server-cpu N] [--server-spin-us N]\n"
                "                   [--handoff [--engine-cpu N] [--ring-slots 8192]]\n"
                "A TCP server answering each frame of the pyengine-server protocol at once (0: any free port);\n"
                "with --server-spin-us, polling for N us after a connection was readable instead of sleeping;\n"
                "with --handoff, each reply goes out by way of a second thread (on the last CPU, or N; -1: not\n"
                "pinned) through two rings of a power of two slots, as pyengine-server's by way of its engine\n"
                "thread.\n");
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
    int port = -1, cpu = -1, handoff = 0, engine_cpu = floor_last_cpu();
    long ring_slots = FLOOR_RING_SLOTS, loop_spin_us = 0;
    for (int i = 1; i < argc; i++) {
        if ((v = floor_option(argc, argv, &i, "--port")))
            port = atoi(v);
        else if ((v = floor_option(argc, argv, &i, "--host")))
            host = v;
        else if ((v = floor_option(argc, argv, &i, "--server-cpu")))
            cpu = atoi(v);
        else if ((v = floor_option(argc, argv, &i, "--engine-cpu")))
            engine_cpu = atoi(v);
        else if ((v = floor_option(argc, argv, &i, "--ring-slots")))
            ring_slots = atol(v);
        else if ((v = floor_option(argc, argv, &i, "--server-spin-us")))
            loop_spin_us = atol(v);
        else if (strcmp(argv[i], "--handoff") == 0)
            handoff = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            floor_usage(stdout);
            return 0;
        } else {
            floor_usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535 || ring_slots < 2 || (ring_slots & (ring_slots - 1)) || loop_spin_us < 0 ||
        loop_spin_us > 1000000) {
        floor_usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = floor_on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (cpu >= 0)
        floor_pin(cpu);
    struct floor_server srv = {.listen_fd = -1, .epoll_fd = epoll_create1(EPOLL_CLOEXEC), .loop_spin_us = (unsigned)loop_spin_us};
    if (srv.epoll_fd < 0) {
        perror("floor_epoll: epoll_create1");
        return 1;
    }
    /* No polling on the event loop's CPU: pyengine's engine thread does not
       (pyengine/server/engine_thread.py, effective_spin_us). */
    unsigned spin_us = engine_cpu >= 0 && engine_cpu == cpu ? 0 : FLOOR_SPIN_US;
    if (handoff && !(srv.handoff = floor_handoff_start(engine_cpu, spin_us, (size_t)ring_slots)))
        return 1;
    if (floor_listen(&srv, host, port) < 0)
        return 1;
    int code = floor_serve(&srv);
    if (srv.handoff)
        floor_handoff_stop(srv.handoff);
    close(srv.listen_fd);
    close(srv.epoll_fd);
    return code;
}
