/*
 * loadgen_worker.c - one worker of tools/loadgen.py's closed loop, in C
 * (`tools/loadgen.py --driver c`).
 *
 * The Python worker spends 6-8 µs of CPU on each request it sends and the
 * reply it reads; on a machine whose server and load generator get a CPU
 * each, that caps a closed loop below what a server can answer. This worker
 * does what the Python one does in the closed loop, at a fraction of the
 * cost: the same connections (one account each, logged in with req_id 0),
 * the same mix of requests over the same instruments (limit adds near the
 * touch, cancels of a random open order of its own, a crossing IOC order
 * when it has none open, market orders), the same window of requests in
 * flight per connection, the same bookkeeping of replies and fills (order
 * ids open, the first fill of a taker order) and the same counts, latencies
 * and measured window; only its random numbers are its own.
 *
 * Usage: loadgen_worker HOST PORT CONNECTIONS FIRST_ACCOUNT WINDOW DURATION
 *                       COUNT WARMUP SEED
 * DURATION in seconds (0: none), COUNT requests (-1: none; 0: none sent),
 * WARMUP seconds.
 * It starts sending 0.2 s after its connections are made, stops at
 * DURATION or COUNT (or on SIGTERM), waits up to 5 s for the replies to what
 * it sent, then prints "quiet" on a line of its own and goes on reading
 * until SIGUSR1 says every worker is quiet (fills of its resting orders can
 * still come from the others' orders; 10 s at most), reads 0.2 s more, and
 * prints one JSON object on stdout: the counts, each latency histogram as
 * [[µs, n], ...] (from a second up, [µs, 1] for each reply: one µs may come
 * many times), its CPU and wall-clock time while sending, the reject codes,
 * the measured window's counts and its bounds on CLOCK_MONOTONIC (the clock of
 * Python's time.perf_counter on Linux). Replies are parsed for the few keys
 * it reads, as the server writes them: flat JSON objects.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum kind { KIND_NEW, KIND_TAKER, KIND_CANCEL };

enum {
    PENDING = 1 << 14,       /* requests in flight a connection can track (req_id modulo) */
    FILL_WAIT = 64,          /* taker orders awaiting their first fill, a connection */
    HIST_DIRECT = 1 << 20,   /* latencies below this many µs counted in an array */
    READ_CHUNK = 1 << 18,
    MAX_CODES = 64,
};

#define LOWEST_US 1
#define HIGHEST_US 60000000ULL

static const struct instrument {
    const char *symbol;
    long long mid, tick;
} instruments[] = {{"ESZ6", 450000, 25}, {"NQZ6", 2000000, 25}, {"CLF7", 7000, 1}, {"BTC-PERP", 90000, 1}};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen_worker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

/* ---- random numbers: xorshift64* -------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return rng_next(s) % n;
}

/* ---- a set of order ids: O(1) add, discard, random pick ------------------ */

struct idpool {
    uint64_t *ids;       /* the members, in any order */
    uint32_t n, cap;
    uint64_t *keys;      /* open addressing: id -> its place in ids (0: empty; ids are never 0) */
    uint32_t *at;
    uint32_t mask;
};

static uint32_t id_home(const struct idpool *p, uint64_t id)
{
    return (uint32_t)((id * 0x9E3779B97F4A7C15ULL) >> 32) & p->mask;
}

static uint32_t id_slot(const struct idpool *p, uint64_t id)
{
    uint32_t i = id_home(p, id);
    while (p->keys[i] && p->keys[i] != id)
        i = (i + 1) & p->mask;
    return i;
}

static void idpool_grow(struct idpool *p)
{
    uint32_t cap = p->cap ? p->cap * 2 : 64;
    p->ids = xrealloc(p->ids, cap * sizeof(*p->ids));
    free(p->keys);
    free(p->at);
    p->mask = cap * 2 - 1;
    p->keys = calloc((size_t)p->mask + 1, sizeof(*p->keys));
    p->at = calloc((size_t)p->mask + 1, sizeof(*p->at));
    if (!p->keys || !p->at)
        die("out of memory");
    p->cap = cap;
    for (uint32_t k = 0; k < p->n; k++) {
        uint32_t i = id_slot(p, p->ids[k]);
        p->keys[i] = p->ids[k];
        p->at[i] = k;
    }
}

static void idpool_add(struct idpool *p, uint64_t id)
{
    uint32_t i;
    if (p->n == p->cap)
        idpool_grow(p);
    i = id_slot(p, id);
    if (p->keys[i])
        return;
    p->keys[i] = id;
    p->at[i] = p->n;
    p->ids[p->n++] = id;
}

static void idpool_discard(struct idpool *p, uint64_t id)
{
    uint32_t i, hole, j, pos;
    uint64_t last;

    if (!p->n)
        return;
    i = id_slot(p, id);
    if (!p->keys[i])
        return;
    pos = p->at[i];
    /* Backward-shift deletion keeps every probe run unbroken. */
    hole = i;
    for (j = (i + 1) & p->mask; p->keys[j]; j = (j + 1) & p->mask) {
        uint32_t home = id_home(p, p->keys[j]);
        if (((j - home) & p->mask) >= ((j - hole) & p->mask)) {
            p->keys[hole] = p->keys[j];
            p->at[hole] = p->at[j];
            hole = j;
        }
    }
    p->keys[hole] = 0;
    last = p->ids[--p->n];
    if (pos < p->n) {
        p->ids[pos] = last;
        p->at[id_slot(p, last)] = pos;
    }
}

static uint64_t idpool_pop_random(struct idpool *p, uint64_t *rng)
{
    uint64_t id = p->ids[rng_below(rng, p->n)];
    idpool_discard(p, id);
    return id;
}

/* ---- latencies, counted by µs -------------------------------------------- */

struct hist {
    uint32_t *direct;            /* [µs] for µs < HIST_DIRECT */
    uint64_t *big;               /* the rest, one entry each */
    size_t nbig, capbig;
};

static void hist_init(struct hist *h)
{
    h->direct = calloc(HIST_DIRECT, sizeof(*h->direct));
    if (!h->direct)
        die("out of memory");
    h->big = NULL;
    h->nbig = h->capbig = 0;
}

static void hist_record(struct hist *h, double seconds)
{
    double us = seconds * 1e6;
    uint64_t v = us < LOWEST_US ? LOWEST_US : us > (double)HIGHEST_US ? HIGHEST_US : (uint64_t)us;
    if (v < HIST_DIRECT) {
        h->direct[v]++;
        return;
    }
    if (h->nbig == h->capbig) {
        h->capbig = h->capbig ? h->capbig * 2 : 256;
        h->big = xrealloc(h->big, h->capbig * sizeof(*h->big));
    }
    h->big[h->nbig++] = v;
}

static void hist_print(const struct hist *h)
{
    const char *sep = "";
    putchar('[');
    for (uint64_t v = 0; v < HIST_DIRECT; v++) {
        if (h->direct[v]) {
            printf("%s[%llu,%u]", sep, (unsigned long long)v, h->direct[v]);
            sep = ",";
        }
    }
    for (size_t k = 0; k < h->nbig; k++) {
        printf("%s[%llu,1]", sep, (unsigned long long)h->big[k]);
        sep = ",";
    }
    putchar(']');
}

/* ---- the run's counts ------------------------------------------------------ */

enum count {
    C_SENT, C_NEW_ORDERS_SENT, C_ACKED, C_REJECTED, C_CANCELLED, C_FILLS, C_ERRORS, C_ERROR_REPLIES,
    C_CANCEL_REJECTS, C_MAKER_FILLS, C_TAKER_FILLS, C__COUNT
};
static const char *const count_names[C__COUNT] = {
    "sent", "new_orders_sent", "acked", "rejected", "cancelled", "fills", "errors", "error_replies",
    "cancel_rejects", "maker_fills", "taker_fills"};

/* The measured window's replies, by what they answer. */
enum wcount { W_REPLIES, W_ACKED, W_CANCELLED, W_REJECTED, W_CANCEL_REJECTS, W_ERROR_REPLIES, W__COUNT };
static const char *const window_names[W__COUNT] = {"replies", "acked", "cancelled", "rejected",
                                                   "cancel_rejects", "error_replies"};

struct run {
    uint64_t counts[C__COUNT];
    uint64_t window[W__COUNT];
    struct hist ack, fill, reject;
    char codes[MAX_CODES][48];
    uint64_t code_counts[MAX_CODES];
    int ncodes;
    double warm_until, last_reply;
};

static void count_code(struct run *r, const char *code, size_t len)
{
    int k;
    if (len >= sizeof(r->codes[0]))
        len = sizeof(r->codes[0]) - 1;
    for (k = 0; k < r->ncodes; k++)
        if (strlen(r->codes[k]) == len && memcmp(r->codes[k], code, len) == 0)
            break;
    if (k == r->ncodes) {
        if (r->ncodes == MAX_CODES)
            return;
        memcpy(r->codes[k], code, len);
        r->codes[k][len] = '\0';
        r->ncodes++;
    }
    r->code_counts[k]++;
}

/* ---- a connection ---------------------------------------------------------- */

struct pending {
    uint64_t req_id; /* 0: free */
    double t0;
    enum kind kind;
};

struct fill_wait {
    uint64_t order_id; /* 0: free */
    double t0;
};

struct conn {
    int fd;
    uint32_t account;
    uint64_t rng;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    uint64_t next_req;
    uint32_t inflight;
    struct pending *pending;
    struct fill_wait fill_wait[FILL_WAIT];
    struct idpool open;
    int dirty, refill;
};

static void put_frame(struct conn *c, const char *body, int len)
{
    if (c->out_len + 4 + (size_t)len > c->out_cap) {
        c->out_cap = (c->out_len + 4 + (size_t)len) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    c->out[c->out_len] = (char)((len >> 24) & 0xff);
    c->out[c->out_len + 1] = (char)((len >> 16) & 0xff);
    c->out[c->out_len + 2] = (char)((len >> 8) & 0xff);
    c->out[c->out_len + 3] = (char)(len & 0xff);
    memcpy(c->out + c->out_len + 4, body, (size_t)len);
    c->out_len += 4 + (size_t)len;
}

/* The next request of the mix, as tools/loadgen.py's Conn.next_message(). */
static void send_next(struct run *r, struct conn *c, double t0)
{
    char body[256];
    int len;
    double u = rng_unit(&c->rng);
    enum kind kind;
    uint64_t req = ++c->next_req;
    struct pending *p = &c->pending[req % PENDING];

    if (u >= 0.6 && u < 0.85 && c->open.n) {
        uint64_t oid = idpool_pop_random(&c->open, &c->rng);
        len = snprintf(body, sizeof(body), "{\"type\":\"cancel\",\"order_id\":%llu,\"req_id\":%llu}",
                       (unsigned long long)oid, (unsigned long long)req);
        kind = KIND_CANCEL;
    } else {
        const struct instrument *in = &instruments[rng_below(&c->rng, 4)];
        int buy = rng_unit(&c->rng) < 0.5;
        long long qty = 1 + (long long)rng_below(&c->rng, 10);
        const char *side = buy ? "buy" : "sell";
        if (u >= 0.95) {
            len = snprintf(body, sizeof(body),
                           "{\"type\":\"new_order\",\"symbol\":\"%s\",\"side\":\"%s\",\"qty\":%lld,"
                           "\"order_type\":\"market\",\"req_id\":%llu}",
                           in->symbol, side, qty, (unsigned long long)req);
            kind = KIND_TAKER;
        } else if (u < 0.6 || u >= 0.85) {
            long long depth = 1 + (long long)(rng_unit(&c->rng) * rng_unit(&c->rng) * 20);
            long long price = buy ? in->mid - depth * in->tick : in->mid + depth * in->tick;
            len = snprintf(body, sizeof(body),
                           "{\"type\":\"new_order\",\"symbol\":\"%s\",\"side\":\"%s\",\"qty\":%lld,"
                           "\"price\":%lld,\"req_id\":%llu}",
                           in->symbol, side, qty, price, (unsigned long long)req);
            kind = KIND_NEW;
        } else {
            long long through = (long long)rng_below(&c->rng, 4);
            long long price = buy ? in->mid + through * in->tick : in->mid - through * in->tick;
            len = snprintf(body, sizeof(body),
                           "{\"type\":\"new_order\",\"symbol\":\"%s\",\"side\":\"%s\",\"qty\":%lld,"
                           "\"price\":%lld,\"tif\":\"ioc\",\"req_id\":%llu}",
                           in->symbol, side, qty, price, (unsigned long long)req);
            kind = KIND_TAKER;
        }
    }
    if (p->req_id)
        die("more than %d requests in flight on one connection", PENDING);
    p->req_id = req;
    p->t0 = t0;
    p->kind = kind;
    put_frame(c, body, len);
    c->inflight++;
    c->dirty = 1;
    r->counts[C_SENT]++;
    if (kind != KIND_CANCEL)
        r->counts[C_NEW_ORDERS_SENT]++;
}

/* ---- reading the server's flat JSON objects ------------------------------ */

/* Where the value of "key" starts in msg[0..len), or NULL. */
static const char *field(const char *msg, size_t len, const char *key)
{
    char pat[32];
    int plen = snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *at = memmem(msg, len, pat, (size_t)plen);
    if (!at)
        return NULL;
    at += plen;
    while (at < msg + len && *at == ' ')
        at++;
    return at < msg + len ? at : NULL;
}

/* The unsigned number of "key"; 0 when absent, null or not a number. */
static uint64_t field_u64(const char *msg, size_t len, const char *key)
{
    const char *v = field(msg, len, key);
    return v && *v >= '0' && *v <= '9' ? strtoull(v, NULL, 10) : 0;
}

/* The string of "key": its bytes at *out, their count; 0 when not a string. */
static size_t field_str(const char *msg, size_t len, const char *key, const char **out)
{
    const char *v = field(msg, len, key), *end;
    if (!v || *v != '"')
        return 0;
    v++;
    end = memchr(v, '"', (size_t)(msg + len - v));
    if (!end)
        return 0;
    *out = v;
    return (size_t)(end - v);
}

static int is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

static struct fill_wait *fill_wait_find(struct conn *c, uint64_t oid)
{
    for (int k = 0; k < FILL_WAIT; k++)
        if (c->fill_wait[k].order_id == oid)
            return &c->fill_wait[k];
    return NULL;
}

/* tools/loadgen.py's on_message(). */
static void on_message(struct run *r, struct conn *c, const char *msg, size_t len, double now)
{
    const char *type;
    size_t tlen = field_str(msg, len, "type", &type);
    uint64_t req;
    struct pending *p;
    double t0;
    enum kind kind;
    enum count key;
    enum wcount wkey;
    struct hist *latency;

    if (is(type, tlen, "fill")) {
        uint64_t oid = field_u64(msg, len, "order_id");
        const char *liq;
        size_t llen = field_str(msg, len, "liquidity", &liq);
        struct fill_wait *w = oid ? fill_wait_find(c, oid) : NULL;
        if (w) {
            if (w->t0 >= r->warm_until)
                hist_record(&r->fill, now - w->t0);
            w->order_id = 0;
        }
        r->counts[C_FILLS]++;
        r->counts[is(liq, llen, "maker") ? C_MAKER_FILLS : C_TAKER_FILLS]++;
        if (field_u64(msg, len, "leaves") == 0)
            idpool_discard(&c->open, oid);
        return;
    }
    req = field_u64(msg, len, "req_id");
    if (is(type, tlen, "cancelled") && !req) {
        uint64_t oid = field_u64(msg, len, "order_id");
        struct fill_wait *w = oid ? fill_wait_find(c, oid) : NULL;
        if (w)
            w->order_id = 0;
        idpool_discard(&c->open, oid);
        return;
    }
    if (!req) {
        if (is(type, tlen, "error"))
            r->counts[C_ERRORS]++;
        return;
    }
    p = &c->pending[req % PENDING];
    if (p->req_id != req)
        die("a reply to request %llu, which is not in flight", (unsigned long long)req);
    t0 = p->t0;
    kind = p->kind;
    p->req_id = 0;
    c->inflight--;
    latency = is(type, tlen, "ack") || is(type, tlen, "cancelled") ? &r->ack
              : is(type, tlen, "reject")                           ? &r->reject
                                                                   : NULL;
    if (latency && t0 >= r->warm_until)
        hist_record(latency, now - t0);
    if (is(type, tlen, "ack")) {
        uint64_t oid = field_u64(msg, len, "order_id");
        key = C_ACKED;
        wkey = W_ACKED;
        if (kind == KIND_TAKER) {
            struct fill_wait *w = fill_wait_find(c, 0);
            if (!w) { /* all taken: the oldest entry makes way */
                w = &c->fill_wait[0];
                for (int k = 1; k < FILL_WAIT; k++)
                    if (c->fill_wait[k].t0 < w->t0)
                        w = &c->fill_wait[k];
            }
            w->order_id = oid;
            w->t0 = t0;
        } else if (oid) {
            idpool_add(&c->open, oid);
        }
    } else if (is(type, tlen, "reject")) {
        key = kind == KIND_CANCEL ? C_CANCEL_REJECTS : C_REJECTED;
        wkey = kind == KIND_CANCEL ? W_CANCEL_REJECTS : W_REJECTED;
        if (kind != KIND_CANCEL) {
            const char *code;
            size_t clen = field_str(msg, len, "code", &code);
            if (clen)
                count_code(r, code, clen);
            else
                count_code(r, "?", 1);
        }
    } else if (is(type, tlen, "cancelled")) {
        key = C_CANCELLED;
        wkey = W_CANCELLED;
    } else {
        key = C_ERROR_REPLIES;
        wkey = W_ERROR_REPLIES;
        r->counts[C_ERRORS]++;
    }
    r->counts[key]++;
    if (now >= r->warm_until) {
        r->window[W_REPLIES]++;
        r->window[wkey]++;
        r->last_reply = now;
    }
}

/* Reads what the socket has; returns 0, or -1 when the server closed it. */
static int read_conn(struct run *r, struct conn *c)
{
    for (;;) {
        ssize_t got;
        size_t pos = 0;
        double now;

        if (c->in_cap - c->in_len < READ_CHUNK) {
            c->in_cap = c->in_len + READ_CHUNK * 2;
            c->in = xrealloc(c->in, c->in_cap);
        }
        got = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        now = now_s();
        c->in_len += (size_t)got;
        while (c->in_len - pos >= 4) {
            const unsigned char *h = (const unsigned char *)c->in + pos;
            size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
            if (c->in_len - pos - 4 < n)
                break;
            on_message(r, c, c->in + pos + 4, n, now);
            pos += 4 + n;
        }
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
        c->refill = 1;
        if ((size_t)got < c->in_cap - c->in_len)
            return 0; /* it had no more */
    }
}

/* Sends what the socket takes; returns whether some is left. */
static int flush_conn(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (n < 0)
            die("send: %s", strerror(errno));
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *a;
    int fd = -1, one = 1, rc = getaddrinfo(host, port, &hints, &res);

    if (rc != 0)
        die("%s:%s: %s", host, port, gai_strerror(rc));
    for (a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        die("cannot connect to %s:%s: %s", host, port, strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int fcntl_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Requests sent and not answered yet, all connections. */
static uint64_t in_flight(const struct conn *conns, int nconn)
{
    uint64_t n = 0;
    for (int k = 0; k < nconn; k++)
        n += conns[k].inflight;
    return n;
}

static volatile sig_atomic_t stop_asked, all_quiet;

static void on_term(int sig)
{
    (void)sig;
    stop_asked = 1;
}

static void on_all_quiet(int sig)
{
    (void)sig;
    all_quiet = 1;
}

static void print_json(const struct run *r, double elapsed, uint64_t inflight, double cpu, double wall)
{
    printf("{\"counts\":{");
    for (int k = 0; k < C__COUNT; k++)
        printf("%s\"%s\":%llu", k ? "," : "", count_names[k], (unsigned long long)r->counts[k]);
    printf("},\"ack\":");
    hist_print(&r->ack);
    printf(",\"fill\":");
    hist_print(&r->fill);
    printf(",\"reject\":");
    hist_print(&r->reject);
    printf(",\"elapsed\":%.9f,\"inflight\":%llu,\"cpu\":%.9f,\"wall\":%.9f,\"reject_codes\":{", elapsed,
           (unsigned long long)inflight, cpu, wall);
    for (int k = 0; k < r->ncodes; k++)
        printf("%s\"%s\":%llu", k ? "," : "", r->codes[k], (unsigned long long)r->code_counts[k]);
    printf("},\"window\":{");
    for (int k = 0; k < W__COUNT; k++)
        printf("%s\"%s\":%llu", k ? "," : "", window_names[k], (unsigned long long)r->window[k]);
    printf("},\"warm_until\":%.9f,\"last_reply\":%.9f}\n", r->warm_until, r->last_reply);
}

int main(int argc, char **argv)
{
    struct run r = {0};
    struct conn *conns;
    struct epoll_event evs[64];
    int nconn, window, ep;
    uint32_t first_account;
    double duration, warmup, start, end, drain_until = 0, quiet_at = 0, final_until = 0, cpu = 0, wall = 0;
    double busy_cpu = 0, busy_wall = 0;
    long long count; /* -1: no count */
    uint64_t seed;
    int busy = 0, stopping = 0, quiet = 0;

    if (argc != 10)
        die("usage: loadgen_worker HOST PORT CONNECTIONS FIRST_ACCOUNT WINDOW DURATION COUNT WARMUP SEED");
    nconn = atoi(argv[3]);
    first_account = (uint32_t)strtoul(argv[4], NULL, 10);
    window = atoi(argv[5]);
    duration = atof(argv[6]);
    count = strtoll(argv[7], NULL, 10);
    warmup = atof(argv[8]);
    seed = strtoull(argv[9], NULL, 10);
    if (nconn < 1 || window < 1 || window > PENDING / 2 || warmup < 0 || count < -1 || (duration <= 0 && count < 0))
        die("bad arguments");
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGUSR1, on_all_quiet);
    hist_init(&r.ack);
    hist_init(&r.fill);
    hist_init(&r.reject);
    ep = epoll_create1(0);
    conns = calloc((size_t)nconn, sizeof(*conns));
    if (ep < 0 || !conns)
        die("cannot start: %s", strerror(errno));
    for (int k = 0; k < nconn; k++) {
        struct conn *c = &conns[k];
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        char login[96];
        int len;

        c->fd = connect_to(argv[1], argv[2]);
        c->account = first_account + (uint32_t)k;
        c->rng = (seed * 1000003ULL + (uint64_t)k * 1009ULL + c->account) | 1;
        c->pending = calloc(PENDING, sizeof(*c->pending));
        if (!c->pending)
            die("out of memory");
        len = snprintf(login, sizeof(login), "{\"type\":\"login\",\"account\":%u,\"req_id\":0}", c->account);
        put_frame(c, login, len);
        flush_conn(c);
        if (fcntl_nonblock(c->fd) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("cannot watch a connection: %s", strerror(errno));
        c->refill = 1;
    }
    start = now_s() + 0.2;
    r.warm_until = start + warmup;
    end = duration > 0 ? start + duration : INFINITY;
    for (;;) {
        double now = now_s();
        int n;

        if (!busy && now >= start) {
            busy = 1;
            busy_cpu = cpu_s();
            busy_wall = now;
        }
        if (!stopping && (now >= end || stop_asked || (count >= 0 && r.counts[C_SENT] >= (uint64_t)count))) {
            stopping = 1;
            drain_until = now + 5.0;
            if (busy) {
                cpu = cpu_s() - busy_cpu;
                wall = now - busy_wall;
            }
        }
        if (stopping && !quiet) {
            if (in_flight(conns, nconn) == 0 || now >= drain_until) {
                quiet = 1;
                quiet_at = now;
                printf("quiet\n");
                fflush(stdout);
            }
        }
        if (quiet && !final_until && (all_quiet || now >= quiet_at + 10.0))
            final_until = now + 0.2;
        if (final_until && now >= final_until)
            break;
        for (int k = 0; k < nconn; k++) {
            struct conn *c = &conns[k];
            if (!stopping && busy && c->refill) {
                /* Its clock starts as its requests are made (they leave with
                   the flush below), not when the turn began. */
                double t0 = now_s();

                while (c->inflight < (uint32_t)window && (count < 0 || r.counts[C_SENT] < (uint64_t)count))
                    send_next(&r, c, t0);
                c->refill = 0;
            }
            if (c->dirty)
                c->dirty = flush_conn(c);
        }
        n = epoll_wait(ep, evs, 64, 1); /* at once when a reply is there; else a millisecond, not a spin */
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++)
            if (read_conn(&r, &conns[evs[k].data.u32]) < 0)
                die("the server closed a connection");
    }
    print_json(&r, now_s() - start, in_flight(conns, nconn), cpu, wall);
    for (int k = 0; k < nconn; k++)
        close(conns[k].fd);
    return 0;
}
