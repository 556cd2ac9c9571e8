/*
 * Snapshots and the journal: round trips, damage detection, and the runner's
 * journal thread (durable release of events, snapshots and segment rotation).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "test.h"

static const struct eng_instrument_spec SPECS[2] = {
    {.symbol = "A", .tick_size = 1, .lot_size = 1, .market_protection = -1},
    {.symbol = "B", .tick_size = 5, .lot_size = 2, .market_protection = 10},
};

static struct eng *make_mode(int with_instruments, int caller_ids)
{
    struct eng *e = eng_create(&(struct eng_config){.caller_order_ids = (uint32_t)caller_ids});
    uint32_t id;
    ASSERT_TRUE(e != NULL);
    for (int i = 0; with_instruments && i < 2; i++)
        ASSERT_EQ(eng_add_instrument(e, &SPECS[i], &id), ENG_OK);
    return e;
}

static struct eng *make(int with_instruments)
{
    return make_mode(with_instruments, 0);
}

/* A deterministic stream of mostly valid commands that rest, trade and
   cancel, now and then halting or resuming an instrument, setting or
   resetting an account's market-maker protection (whose window runs on
   ts = i), cancelling all of an account's orders (or every account's) or
   setting an instrument's order limits. */
static struct eng_cmd command(uint64_t i, uint64_t *rng)
{
    struct eng_cmd c = {0};
    uint64_t r = test_rand(rng) % 10, p = test_rand(rng) % 48;
    uint32_t inst = (uint32_t)(test_rand(rng) % 2);
    if (i >= 10 && test_rand(rng) % 64 == 0) {
        c.type = ENG_CMD_SET_STATE;
        c.instrument = inst;
        c.qty = (int64_t)(test_rand(rng) % 2);
    } else if (i >= 10 && p < 3) {
        static const uint8_t types[3] = {ENG_CMD_SET_MMP, ENG_CMD_RESET_MMP, ENG_CMD_CANCEL_ALL};
        c.type = types[p];
        c.instrument = inst;
        c.account = (uint32_t)(test_rand(rng) % 5);
        c.qty = test_rand(rng) % 8 ? 4 + (int64_t)(test_rand(rng) % 30) : 0;
        c.price = (int64_t)(test_rand(rng) % 300);
        if (c.type == ENG_CMD_CANCEL_ALL)
            c.flags = (uint8_t)(test_rand(rng) % 4) << 4; /* DEAD_MAN, ALL_INSTRUMENTS */
        if (c.type == ENG_CMD_CANCEL_ALL && test_rand(rng) % 4 == 0) {
            c.flags = (c.flags & ENG_CMD_F_ALL_INSTRUMENTS) | ENG_CMD_F_ALL_ACCOUNTS;
            c.account = 0;
        }
    } else if (i >= 10 && p == 3 && test_rand(rng) % 4 == 0) {
        c.type = ENG_CMD_SET_LIMITS; /* about half the orders over them, or none */
        c.instrument = inst;
        c.qty = test_rand(rng) % 2 ? (inst ? 12 : 6) : 0;
        c.price = test_rand(rng) % 2 ? (inst ? 5000 : 500) : 0;
    } else if (r < 7 || i < 10) {
        int64_t tick = inst ? 5 : 1, lot = inst ? 2 : 1;
        c.type = ENG_CMD_NEW;
        c.instrument = inst;
        c.side = test_rand(rng) % 2 ? ENG_BUY : ENG_SELL;
        c.order_type = ENG_LIMIT;
        c.tif = ENG_GTC;
        c.account = (uint32_t)(test_rand(rng) % 5);
        c.qty = lot * (int64_t)(1 + test_rand(rng) % 9);
        c.price = tick * (100 + (int64_t)(test_rand(rng) % 11) - 5);
        if (test_rand(rng) % 4 == 0)
            snprintf(c.coid, sizeof(c.coid), "c%llu", (unsigned long long)i);
    } else {
        c.type = r < 9 ? ENG_CMD_CANCEL : ENG_CMD_MODIFY;
        c.order_id = 1 + test_rand(rng) % (i / 2 + 1);
        c.flags = ENG_CMD_F_ANY_ACCOUNT | ENG_CMD_F_KEEP_PRICE;
        c.qty = 2;
    }
    c.ts = (int64_t)i;
    return c;
}

static char *tmpdir(void)
{
    static char buf[64];
    snprintf(buf, sizeof(buf), "/tmp/pyengine-test-XXXXXX");
    ASSERT_TRUE(mkdtemp(buf) != NULL);
    return buf;
}

static void rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    while (d && (de = readdir(d)) != NULL)
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return n;
}

void test_snapshot_round_trip(void)
{
    struct eng *a = make(1), *b = make(0);
    uint64_t rng = 5, seq = 0;
    char path[256];
    const char *dir = tmpdir();
    size_t len, na, nb;
    void *buf;

    for (uint64_t i = 0; i < 3000; i++) {
        struct eng_cmd c = command(i, &rng);
        eng_process(a, &c);
    }
    eng_clear_events(a);
    buf = eng_snapshot_serialize(a, &len);
    ASSERT_TRUE(buf != NULL);
    ASSERT_EQ(eng_snapshot_write_file(dir, buf, len), 0);
    eng_free_buffer(buf);
    snprintf(path, sizeof(path), "%s/snapshot-%020llu.snap", dir, (unsigned long long)eng_seq(a));
    ASSERT_EQ(eng_snapshot_load(b, path, &seq), ENG_OK);
    ASSERT_EQ(seq, 3000);
    ASSERT_VERIFY(b);
    ASSERT_EQ(eng_state_hash(a), eng_state_hash(b));
    ASSERT_EQ(eng_seq(b), 3000);
    /* Loading into an engine that is not empty is refused. */
    ASSERT_EQ(eng_snapshot_load(a, path, &seq), ENG_INVALID_ARGUMENT);
    /* The same commands from here on give the same events on both. */
    for (uint64_t i = 3000; i < 4000; i++) {
        struct eng_cmd c = command(i, &rng);
        eng_process(a, &c);
        eng_process(b, &c);
    }
    const struct eng_event *ea = eng_events(a, &na), *eb = eng_events(b, &nb);
    ASSERT_EQ(na, nb);
    ASSERT_TRUE(memcmp(ea, eb, na * sizeof(*ea)) == 0);
    ASSERT_EQ(eng_state_hash(a), eng_state_hash(b));
    eng_destroy(a);
    eng_destroy(b);
    rmtree(dir);
}

/* command(), with caller order ids: each order id x given as a spread-out
   bijection of it (a new order's the seq of its command). */
static struct eng_cmd caller_command(uint64_t i, uint64_t *rng)
{
    struct eng_cmd c = command(i, rng);
    c.order_id = (c.type == ENG_CMD_NEW ? i + 1 : c.order_id) * UINT64_C(0x9E3779B97F4A7C15);
    return c;
}

/* Write `e`'s snapshot into `dir`; its path goes to `path`. */
static void write_snapshot(const struct eng *e, const char *dir, char *path, size_t cap)
{
    size_t len;
    void *buf = eng_snapshot_serialize(e, &len);
    ASSERT_TRUE(buf != NULL);
    ASSERT_EQ(eng_snapshot_write_file(dir, buf, len), 0);
    eng_free_buffer(buf);
    snprintf(path, cap, "%s/snapshot-%020llu.snap", dir, (unsigned long long)eng_seq(e));
}

void test_snapshot_caller_ids_round_trip(void)
{
    struct eng *a = make_mode(1, 1), *b = make_mode(0, 1), *d = make(0), *da = make(1);
    uint64_t rng = 9, seq = 0;
    char path[256], dpath[256];
    const char *dir = tmpdir();
    struct eng_counters ct;
    struct eng_stats st;
    size_t na, nb;

    for (uint64_t i = 0; i < 3000; i++) {
        struct eng_cmd c = caller_command(i, &rng);
        eng_process(a, &c);
    }
    eng_clear_events(a);
    eng_get_stats(a, &st);
    ASSERT_TRUE(st.open_orders > 0);
    write_snapshot(a, dir, path, sizeof(path));
    /* Into an engine of the other mode: refused, and that engine stays empty. */
    errno = 0;
    ASSERT_EQ(eng_snapshot_load(d, path, &seq), ENG_INVALID_ARGUMENT);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_EQ(eng_instrument_count(d), 0);
    /* Into one of the same mode: the same state, ids and all. */
    ASSERT_EQ(eng_snapshot_load(b, path, &seq), ENG_OK);
    ASSERT_EQ(seq, 3000);
    ASSERT_VERIFY(b);
    ASSERT_EQ(eng_state_hash(a), eng_state_hash(b));
    eng_get_counters(b, &ct);
    ASSERT_EQ(ct.order_id, 0);
    ASSERT_EQ(ct.seq, 3000);
    for (uint64_t i = 3000; i < 4000; i++) {
        struct eng_cmd c = caller_command(i, &rng);
        eng_process(a, &c);
        eng_process(b, &c);
    }
    const struct eng_event *ea = eng_events(a, &na), *eb = eng_events(b, &nb);
    ASSERT_EQ(na, nb);
    ASSERT_TRUE(memcmp(ea, eb, na * sizeof(*ea)) == 0);
    ASSERT_EQ(eng_state_hash(a), eng_state_hash(b));

    /* A snapshot of the default mode is refused by an engine with caller ids. */
    struct eng *c2 = make_mode(0, 1);
    for (uint64_t i = 0; i < 500; i++) {
        struct eng_cmd c = command(i, &rng);
        eng_process(da, &c);
    }
    write_snapshot(da, dir, dpath, sizeof(dpath));
    errno = 0;
    ASSERT_EQ(eng_snapshot_load(c2, dpath, &seq), ENG_INVALID_ARGUMENT);
    ASSERT_EQ(errno, EINVAL);
    ASSERT_EQ(eng_instrument_count(c2), 0);
    ASSERT_EQ(eng_snapshot_load(d, dpath, &seq), ENG_OK);
    ASSERT_EQ(eng_state_hash(d), eng_state_hash(da));
    eng_destroy(a);
    eng_destroy(b);
    eng_destroy(c2);
    eng_destroy(d);
    eng_destroy(da);
    rmtree(dir);
}

/* Make a snapshot image's checksums good again after an edit, and write it
   into `dir`; its path goes to `path` (the offsets of snapshot.c's struct
   snap_header). */
static void reseal(unsigned char *buf, size_t len, const char *dir, char *path, size_t cap)
{
    uint32_t crc = crc32c(0, buf + 64, len - 64);
    uint64_t seq;

    memcpy(buf + 48, &crc, 4);
    memset(buf + 52, 0, 4);
    crc = crc32c(0, buf, 64);
    memcpy(buf + 52, &crc, 4);
    memcpy(&seq, buf + 16, 8);
    ASSERT_EQ(eng_snapshot_write_file(dir, buf, len), 0);
    snprintf(path, cap, "%s/snapshot-%020llu.snap", dir, (unsigned long long)seq);
}

static int load_into_new(const char *path)
{
    struct eng *b = make(0);
    uint64_t seq;
    int rc = eng_snapshot_load(b, path, &seq);

    eng_destroy(b);
    return rc;
}

/* A snapshot of what no engine could hold is refused, checksums good or not:
   a resting order off its lot or tick, a tripped protection whose account
   still has orders resting (the offsets of snapshot.c's records). */
void test_snapshot_of_an_impossible_state_is_refused(void)
{
    struct eng *a = make(1);
    const char *dir = tmpdir();
    char path[256];
    size_t len, orders = 64 + 2 * 64, mmps = orders + 56;
    unsigned char *buf, *copy;
    uint32_t tripped = 1;
    struct eng_cmd c = {.type = ENG_CMD_NEW, .side = ENG_BUY, .order_type = ENG_LIMIT, .tif = ENG_GTC,
                        .instrument = 1, .account = 3, .price = 500, .qty = 2};

    ASSERT_EQ(eng_process(a, &c), 1);
    for (uint32_t account = 3; account <= 4; account++) {
        c = (struct eng_cmd){.type = ENG_CMD_SET_MMP, .instrument = 1, .account = account, .qty = 5};
        eng_process(a, &c);
    }
    buf = eng_snapshot_serialize(a, &len);
    ASSERT_TRUE(buf != NULL);
    copy = malloc(len);
    ASSERT_TRUE(copy != NULL);
    struct edit {
        size_t at;
        int64_t value;
        size_t size;
        int rc;
    } edits[] = {
        {orders + 8, 501, 8, ENG_CORRUPT},            /* price off instrument B's tick of 5 */
        {orders + 16, 3, 8, ENG_CORRUPT},             /* qty off its lot of 2 */
        {mmps + 40, tripped, 4, ENG_CORRUPT},         /* account 3 tripped, its order resting */
        {mmps + 48 + 40, tripped, 4, ENG_OK},         /* account 4 tripped: nothing rests */
        {orders + 8, 495, 8, ENG_OK},                 /* a price on the tick */
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        memcpy(copy, buf, len);
        memcpy(copy + edits[i].at, &edits[i].value, edits[i].size);
        reseal(copy, len, dir, path, sizeof(path));
        ASSERT_EQ(load_into_new(path), edits[i].rc);
    }
    free(copy);
    eng_free_buffer(buf);
    eng_destroy(a);
    rmtree(dir);
}

/* A version 3 file (before order limits) loads, with no limits set: the
   image of an engine without limits, its limits section cut off and its
   header made version 3's. */
void test_snapshot_version_3_loads_without_limits(void)
{
    struct eng *a = make(1), *b = make(0);
    uint64_t rng = 11, seq = 0;
    const char *dir = tmpdir();
    char path[256];
    size_t len;
    unsigned char *buf;
    uint32_t version = 3;
    struct eng_order_limits limits;

    for (uint64_t i = 0; i < 500; i++) {
        struct eng_cmd c = command(i, &rng);
        eng_process(a, &c);
    }
    for (uint32_t inst = 0; inst < 2; inst++) {
        struct eng_cmd c = {.type = ENG_CMD_SET_LIMITS, .instrument = inst};
        eng_process(a, &c);
    }
    buf = eng_snapshot_serialize(a, &len);
    ASSERT_TRUE(buf != NULL);
    len -= 2 * sizeof(struct eng_order_limits);
    memcpy(buf + 8, &version, 4);
    reseal(buf, len, dir, path, sizeof(path));
    ASSERT_EQ(eng_snapshot_load(b, path, &seq), ENG_OK);
    ASSERT_VERIFY(b);
    ASSERT_EQ(eng_state_hash(a), eng_state_hash(b));
    ASSERT_EQ(eng_get_order_limits(b, 1, &limits), 0);
    ASSERT_EQ(limits.max_qty, 0);
    ASSERT_EQ(limits.max_notional, 0);
    eng_free_buffer(buf);
    eng_destroy(a);
    eng_destroy(b);
    rmtree(dir);
}

void test_snapshot_damage_is_refused(void)
{
    struct eng *a = make(1);
    uint64_t rng = 9, seq;
    const char *dir = tmpdir();
    char path[256];
    size_t len;
    void *buf;

    for (uint64_t i = 0; i < 500; i++) {
        struct eng_cmd c = command(i, &rng);
        eng_process(a, &c);
    }
    buf = eng_snapshot_serialize(a, &len);
    ASSERT_EQ(eng_snapshot_write_file(dir, buf, len), 0);
    snprintf(path, sizeof(path), "%s/snapshot-%020llu.snap", dir, (unsigned long long)eng_seq(a));
    /* Flip one byte anywhere: refused. */
    for (size_t at = 0; at < len; at += len / 17 + 1) {
        struct eng *b = make(0);
        FILE *f = fopen(path, "r+b");
        unsigned char byte;
        fseek(f, (long)at, SEEK_SET);
        byte = (unsigned char)fgetc(f);
        fseek(f, (long)at, SEEK_SET);
        fputc(byte ^ 0x40, f);
        fclose(f);
        ASSERT_EQ(eng_snapshot_load(b, path, &seq), ENG_CORRUPT);
        eng_destroy(b);
        f = fopen(path, "r+b");
        fseek(f, (long)at, SEEK_SET);
        fputc(byte, f);
        fclose(f);
    }
    /* Cut short: refused. */
    ASSERT_EQ(truncate(path, (off_t)len - 1), 0);
    struct eng *b = make(0);
    ASSERT_EQ(eng_snapshot_load(b, path, &seq), ENG_CORRUPT);
    eng_destroy(b);
    eng_free_buffer(buf);
    eng_destroy(a);
    rmtree(dir);
}

/* Run `n` commands through a journaling runner; returns the engine. */
static struct eng *journal_run(const char *dir, uint64_t n, uint64_t snapshot_every, uint32_t keep)
{
    struct eng *e = make(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 1 << 14,
                                .out_capacity = 1 << 16, .journal_dir = dir,
                                .fsync = JNL_FSYNC_OFF, .keep_segments = keep,
                                .snapshot_every = snapshot_every};
    struct runner *r = runner_create(e, &cfg);
    static struct runner_event ev[4096];
    struct runner_stats st;
    uint64_t rng = 77, sent = 0;

    ASSERT_TRUE(r != NULL);
    ASSERT_EQ(runner_start(r), 0);
    while (sent < n) {
        struct runner_cmd c = {.cmd = command(sent, &rng), .tag = sent};
        if (runner_submit(r, &c, 1))
            sent++;
        size_t k = runner_poll(r, ev, 4096);
        runner_get_stats(r, &st);
        for (size_t i = 0; i < k; i++)
            ASSERT_TRUE(ev[i].ev.seq <= st.journaled); /* released only once journaled */
    }
    runner_request_stop(r);
    do {
        runner_poll(r, ev, 4096);
        runner_get_stats(r, &st);
    } while (st.running || st.out_queued);
    ASSERT_EQ(st.journaled, n);
    ASSERT_EQ(st.journal_errno, 0);
    runner_destroy(r);
    return e;
}

void test_journal_replay_gives_the_same_state(void)
{
    const char *dir = tmpdir();
    char path[256];
    struct eng *live = journal_run(dir, 5000, 0, 0);
    struct eng *replay = make(1);
    struct jnl_scan scan;
    uint64_t counts[ENG_CMD__COUNT];

    snprintf(path, sizeof(path), "%s/journal-%020llu.log", dir, 1ull);
    ASSERT_EQ(jnl_scan_file(path, replay, 0, &scan, counts), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_END);
    ASSERT_EQ(scan.records, 5000);
    ASSERT_EQ(scan.applied, 5000);
    ASSERT_EQ(scan.first_seq, 1);
    ASSERT_EQ(scan.last_seq, 5000);
    ASSERT_EQ(counts[ENG_CMD_NEW] + counts[ENG_CMD_CANCEL] + counts[ENG_CMD_MODIFY] +
                  counts[ENG_CMD_SET_STATE] + counts[ENG_CMD_CANCEL_ALL] +
                  counts[ENG_CMD_SET_MMP] + counts[ENG_CMD_RESET_MMP] + counts[ENG_CMD_SET_LIMITS],
              5000);
    ASSERT_TRUE(counts[ENG_CMD_SET_STATE] > 0 && counts[ENG_CMD_SET_LIMITS] > 0);
    ASSERT_TRUE(counts[ENG_CMD_SET_MMP] > 0 && counts[ENG_CMD_RESET_MMP] > 0 &&
                counts[ENG_CMD_CANCEL_ALL] > 0);
    ASSERT_EQ(counts[0], 0);
    ASSERT_EQ(scan.valid_bytes, scan.file_bytes);
    ASSERT_EQ(eng_state_hash(live), eng_state_hash(replay));
    ASSERT_VERIFY(replay);
    struct eng_instrument_spec specs[4];
    ASSERT_EQ(jnl_read_instruments(path, specs, 4), 2);
    ASSERT_STREQ(specs[1].symbol, "B");
    eng_destroy(live);
    eng_destroy(replay);
    rmtree(dir);
}

void test_applied_records_keep_their_events(void)
{
    enum { N = 3000, RUN = 7 };
    struct jnl_record *recs = calloc(N, sizeof(*recs));
    struct eng *live = make(1), *applied = make(1);
    uint64_t rng = 9;
    size_t nl, na;

    ASSERT_TRUE(recs != NULL);
    for (uint64_t i = 0; i < N; i++) {
        recs[i].len = sizeof(recs[i]);
        recs[i].seq = i + 1;
        recs[i].cmd = command(i, &rng);
        ASSERT_TRUE(eng_process(live, &recs[i].cmd) >= 0);
    }
    for (size_t at = 0; at < N; at += RUN) {
        size_t n = N - at < RUN ? N - at : RUN;
        ASSERT_EQ(jnl_apply_records(applied, &recs[at], n), n);
        ASSERT_VERIFY(applied);
    }
    /* Every event kept, the same as one command at a time gave. */
    const struct eng_event *el = eng_events(live, &nl), *ea = eng_events(applied, &na);
    ASSERT_EQ(na, nl);
    ASSERT_TRUE(memcmp(el, ea, nl * sizeof(*el)) == 0);
    ASSERT_EQ(eng_state_hash(live), eng_state_hash(applied));
    ASSERT_EQ(jnl_apply_records(applied, recs, 0), 0);
    eng_destroy(live);
    eng_destroy(applied);
    free(recs);
}

void test_journal_torn_and_damaged_records(void)
{
    const char *dir = tmpdir();
    char path[256];
    struct eng *live = journal_run(dir, 1000, 0, 0);
    struct jnl_scan scan;
    off_t size;
    int fd;

    snprintf(path, sizeof(path), "%s/journal-%020llu.log", dir, 1ull);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    size = (off_t)scan.file_bytes;
    /* A torn last record: everything before it is whole and replays. */
    ASSERT_EQ(truncate(path, size - 30), 0);
    struct eng *e = make(1);
    ASSERT_EQ(jnl_scan_file(path, e, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_TORN);
    ASSERT_EQ(scan.records, 999);
    ASSERT_EQ(eng_seq(e), 999);
    ASSERT_EQ(scan.valid_bytes, (uint64_t)size - sizeof(struct jnl_record));
    eng_destroy(e);
    /* A flipped byte in record 500: the scan stops before it. */
    fd = open(path, O_RDWR);
    off_t at = (off_t)(scan.valid_bytes - 500 * sizeof(struct jnl_record) + 40);
    unsigned char byte;
    ASSERT_EQ(pread(fd, &byte, 1, at), 1);
    byte ^= 1;
    ASSERT_EQ(pwrite(fd, &byte, 1, at), 1);
    close(fd);
    e = make(1);
    ASSERT_EQ(jnl_scan_file(path, e, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_BAD_CHECKSUM);
    ASSERT_EQ(scan.records, 499);
    ASSERT_EQ(scan.last_seq, 499);
    ASSERT_EQ(eng_seq(e), 499);
    ASSERT_VERIFY(e);
    eng_destroy(e);
    /* A file that is not a journal. */
    ASSERT_EQ(truncate(path, 10), 0);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_BAD_HEADER);
    eng_destroy(live);
    rmtree(dir);
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    unsigned char byte;
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(pread(fd, &byte, 1, at), 1);
    byte ^= 0x10;
    ASSERT_EQ(pwrite(fd, &byte, 1, at), 1);
    close(fd);
}

/* What follows the point where a scan stops: nothing valid after a torn
   write, the records after the damage otherwise, wherever they are. */
void test_journal_scan_counts_what_follows_a_stop(void)
{
    const char *dir = tmpdir();
    const off_t rec = sizeof(struct jnl_record);
    char path[256];
    struct jnl_scan scan;
    off_t size, header;
    int fd;

    eng_destroy(journal_run(dir, 1000, 0, 0));
    snprintf(path, sizeof(path), "%s/journal-%020llu.log", dir, 1ull);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.following, 0);
    size = (off_t)scan.file_bytes;
    header = size - 1000 * rec;
    /* The last record cut short, or its end never written (zeros): nothing
       valid follows. */
    ASSERT_EQ(truncate(path, size - rec + 30), 0);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_TORN);
    ASSERT_EQ(scan.following, 0);
    ASSERT_EQ(truncate(path, size), 0);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_BAD_CHECKSUM);
    ASSERT_EQ(scan.last_seq, 999);
    ASSERT_EQ(scan.following, 0);
    ASSERT_EQ(truncate(path, size - rec), 0);
    size -= rec;
    /* Damage inside record 500: records 501..999 follow it. */
    flip_byte(path, header + 499 * rec + 40);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_BAD_CHECKSUM);
    ASSERT_EQ(scan.last_seq, 499);
    ASSERT_EQ(scan.following, 499);
    ASSERT_EQ(scan.following_min_seq, 501);
    ASSERT_EQ(scan.following_max_seq, 999);
    /* A byte lost there: the records after it are found all the same. */
    {
        static char buf[1000 * sizeof(struct jnl_record)];
        off_t from = header + 499 * rec + 41;
        fd = open(path, O_RDWR);
        ASSERT_EQ(pread(fd, buf, (size_t)(size - from), from), size - from);
        ASSERT_EQ(pwrite(fd, buf, (size_t)(size - from), from - 1), size - from);
        ASSERT_EQ(ftruncate(fd, size - 1), 0);
        close(fd);
    }
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_BAD_CHECKSUM);
    ASSERT_EQ(scan.following, 499);
    ASSERT_EQ(scan.following_min_seq, 501);
    /* A damaged header: every record is found. */
    flip_byte(path, 0);
    ASSERT_EQ(jnl_scan_file(path, NULL, 0, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_BAD_HEADER);
    ASSERT_EQ(scan.following, 998); /* 1..499 and 501..999 */
    ASSERT_EQ(scan.following_min_seq, 1);
    ASSERT_EQ(scan.following_max_seq, 999);
    rmtree(dir);
}

/* The engine's counters go up on request, never down. */
void test_engine_counters_are_raised_never_lowered(void)
{
    struct eng *e = make(1);
    struct eng_counters c;
    struct eng_cmd sell = {.type = ENG_CMD_NEW, .side = ENG_SELL, .order_type = ENG_LIMIT,
                           .tif = ENG_GTC, .account = 1, .qty = 1, .price = 100};
    struct eng_cmd buy = sell;
    const struct eng_event *ev;
    size_t n;

    buy.side = ENG_BUY;
    buy.account = 2;
    eng_process(e, &sell);
    eng_process(e, &buy);
    eng_get_counters(e, &c);
    ASSERT_EQ(c.seq, 2);
    ASSERT_EQ(c.order_id, 2);
    ASSERT_EQ(c.trade_id, 1);
    eng_raise_counters(e, &(struct eng_counters){.seq = 1000, .order_id = 1, .trade_id = 5000});
    eng_get_counters(e, &c);
    ASSERT_EQ(c.seq, 1000);
    ASSERT_EQ(c.order_id, 2);
    ASSERT_EQ(c.trade_id, 5000);
    eng_clear_events(e);
    eng_process(e, &sell);
    eng_process(e, &buy);
    ev = eng_events(e, &n);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(ev[0].seq, 1001);
    ASSERT_EQ(ev[0].order_id, 3);
    ASSERT_EQ(ev[n - 1].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[n - 1].trade_id, 5001);
    ASSERT_VERIFY(e);
    eng_destroy(e);
}

void test_mark_round_trip_and_damage(void)
{
    const char *dir = tmpdir();
    struct eng_counters m = {.seq = 7, .order_id = 8, .trade_id = 9}, got;
    char path[256];
    FILE *f;

    ASSERT_EQ(eng_mark_read(dir, &got), ENG_OK); /* none yet: zeros */
    ASSERT_EQ(got.seq + got.order_id + got.trade_id, 0);
    ASSERT_EQ(eng_mark_write(dir, &m), 0);
    ASSERT_EQ(count_files(dir, "HIGHWATER"), 1); /* no temporary file left */
    ASSERT_EQ(eng_mark_read(dir, &got), ENG_OK);
    ASSERT_EQ(got.seq, 7);
    ASSERT_EQ(got.order_id, 8);
    ASSERT_EQ(got.trade_id, 9);
    snprintf(path, sizeof(path), "%s/HIGHWATER", dir);
    flip_byte(path, 12);
    ASSERT_EQ(eng_mark_read(dir, &got), ENG_CORRUPT);
    ASSERT_EQ(eng_mark_write(dir, &m), 0);
    ASSERT_TRUE((f = fopen(path, "ab")) != NULL);
    fputc(0, f);
    fclose(f);
    ASSERT_EQ(eng_mark_read(dir, &got), ENG_CORRUPT);
    ASSERT_EQ(truncate(path, 10), 0);
    ASSERT_EQ(eng_mark_read(dir, &got), ENG_CORRUPT);
    rmtree(dir);
    ASSERT_EQ(eng_mark_write(dir, &m), -1);
    ASSERT_EQ(errno, ENOENT);
}

/* The journal thread keeps the mark on disk ahead of every record it
   writes, and never lowers a mark it finds. */
void test_runner_keeps_the_mark_ahead(void)
{
    const char *dir = tmpdir();
    struct eng *e = journal_run(dir, 3000, 0, 0);
    struct eng_counters c, m;

    eng_get_counters(e, &c);
    ASSERT_EQ(eng_mark_read(dir, &m), ENG_OK);
    ASSERT_TRUE(c.trade_id > 0);
    ASSERT_TRUE(m.seq > c.seq && m.seq <= c.seq + JNL_MARK_BLOCK);
    ASSERT_TRUE(m.order_id > c.order_id && m.order_id <= c.order_id + JNL_MARK_BLOCK);
    ASSERT_TRUE(m.trade_id > c.trade_id && m.trade_id <= c.trade_id + JNL_MARK_BLOCK);
    eng_destroy(e);
    rmtree(dir);
    dir = tmpdir();
    m = (struct eng_counters){.seq = 5 * JNL_MARK_BLOCK, .order_id = 6 * JNL_MARK_BLOCK,
                              .trade_id = 7 * JNL_MARK_BLOCK};
    ASSERT_EQ(eng_mark_write(dir, &m), 0);
    eng_destroy(journal_run(dir, 100, 0, 0));
    ASSERT_EQ(eng_mark_read(dir, &c), ENG_OK);
    ASSERT_TRUE(memcmp(&c, &m, sizeof(m)) == 0);
    rmtree(dir);
}

void test_journal_snapshots_rotate_segments(void)
{
    const char *dir = tmpdir();
    char path[256];
    FILE *aside;

    /* A tail an earlier recovery set aside: pruning leaves it alone. */
    snprintf(path, sizeof(path), "%s/journal-%020llu.log.damaged-1", dir, 1ull);
    ASSERT_TRUE((aside = fopen(path, "w")) != NULL);
    fclose(aside);
    struct eng *live = journal_run(dir, 2500, 1000, 0);
    struct eng *restored = make(0);
    struct jnl_scan scan;
    uint64_t seq;

    /* Snapshots after 1000 and 2000; the older one and the segments they
       cover are gone. */
    ASSERT_EQ(count_files(dir, "snapshot-"), 1);
    ASSERT_EQ(count_files(dir, "journal-"), 2);
    ASSERT_EQ(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/snapshot-%020llu.snap", dir, 2000ull);
    ASSERT_EQ(eng_snapshot_load(restored, path, &seq), ENG_OK);
    ASSERT_EQ(seq, 2000);
    snprintf(path, sizeof(path), "%s/journal-%020llu.log", dir, 2001ull);
    ASSERT_EQ(jnl_scan_file(path, restored, seq, &scan, NULL), ENG_OK);
    ASSERT_EQ(scan.stop, JNL_END);
    ASSERT_EQ(scan.applied, 500);
    ASSERT_EQ(eng_state_hash(live), eng_state_hash(restored));
    eng_destroy(live);
    eng_destroy(restored);
    rmtree(dir);
    /* keep_segments: nothing is pruned. */
    dir = tmpdir();
    live = journal_run(dir, 2500, 1000, 1);
    ASSERT_EQ(count_files(dir, "journal-"), 3);
    ASSERT_EQ(count_files(dir, "snapshot-"), 2);
    /* From the first snapshot, the segments it covers are passed over
       unread, and the rest replays to the same state. */
    restored = make(0);
    snprintf(path, sizeof(path), "%s/snapshot-%020llu.snap", dir, 1000ull);
    ASSERT_EQ(eng_snapshot_load(restored, path, &seq), ENG_OK);
    const unsigned long long firsts[3] = {1, 1001, 2001}, skipped[3] = {1000, 0, 0}, applied[3] = {0, 1000, 500};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/journal-%020llu.log", dir, firsts[i]);
        ASSERT_EQ(jnl_scan_file(path, restored, seq, &scan, NULL), ENG_OK);
        ASSERT_EQ(scan.stop, JNL_END);
        ASSERT_EQ(scan.skipped, skipped[i]);
        ASSERT_EQ(scan.applied, applied[i]);
        ASSERT_EQ(scan.valid_bytes, scan.file_bytes);
    }
    ASSERT_EQ(eng_state_hash(live), eng_state_hash(restored));
    ASSERT_VERIFY(restored);
    eng_destroy(restored);
    eng_destroy(live);
    rmtree(dir);
}

void test_runner_snapshot_control(void)
{
    const char *dir = tmpdir();
    struct eng *e = make(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 64, .out_capacity = 64,
                                .journal_dir = dir, .fsync = JNL_FSYNC_BATCH};
    struct runner *r = runner_create(e, &cfg);
    struct runner_cmd cmds[2];
    struct runner_event ev[8];
    struct runner_stats st;
    uint64_t rng = 3;
    size_t got = 0;

    ASSERT_EQ(runner_start(r), 0);
    cmds[0] = (struct runner_cmd){.cmd = command(0, &rng), .tag = 1};
    cmds[1] = (struct runner_cmd){.cmd = {.type = RUNNER_CTL_SNAPSHOT}, .tag = 2};
    ASSERT_EQ(runner_submit(r, cmds, 2), 2);
    while (got < 2) {
        struct pollfd p = {.fd = runner_event_fd(r), .events = POLLIN};
        size_t n = runner_poll(r, ev + got, 8 - got);
        uint64_t v;
        if (!n) {
            ASSERT_EQ(poll(&p, 1, 5000), 1);
            ASSERT_TRUE(read(p.fd, &v, sizeof(v)) == (long)sizeof(v));
        }
        got += n;
    }
    ASSERT_EQ(ev[0].tag, 1);
    ASSERT_EQ(ev[1].tag, 2);
    ASSERT_EQ(ev[1].ev.type, RUNNER_EV_SNAPSHOT);
    ASSERT_EQ(ev[1].ev.seq, 1);
    ASSERT_EQ(ev[1].ev.leaves, 0);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.snapshots, 1);
    ASSERT_EQ(st.snapshot_seq, 1);
    ASSERT_TRUE(st.journal_syncs >= 1);
    ASSERT_EQ(count_files(dir, "snapshot-"), 1);
    runner_destroy(r);
    eng_destroy(e);
    rmtree(dir);
    /* Without a journal, a snapshot request is answered ENOTSUP. */
    e = make(1);
    r = runner_create(e, &(struct runner_config){.cpu = -1});
    ASSERT_EQ(runner_start(r), 0);
    ASSERT_EQ(runner_submit(r, &cmds[1], 1), 1);
    got = 0;
    while (!got)
        got = runner_poll(r, ev, 8);
    ASSERT_EQ(ev[0].ev.type, RUNNER_EV_SNAPSHOT);
    ASSERT_TRUE(ev[0].ev.leaves != 0);
    runner_destroy(r);
    eng_destroy(e);
}

void test_runner_journal_failure_holds_events(void)
{
    const char *dir = tmpdir();
    struct eng *e = make(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 64, .out_capacity = 64,
                                .journal_dir = dir, .fsync = JNL_FSYNC_BATCH};
    struct runner *r = runner_create(e, &cfg);
    struct runner_cmd cmds[3];
    struct runner_event ev[8];
    struct runner_stats st;
    uint64_t rng = 9;
    size_t got = 0;

    ASSERT_EQ(runner_start(r), 0);
    cmds[0] = (struct runner_cmd){.cmd = command(0, &rng), .tag = 1};
    cmds[1] = (struct runner_cmd){.cmd = {.type = RUNNER_CTL_SNAPSHOT}, .tag = 2};
    cmds[2] = (struct runner_cmd){.cmd = command(1, &rng), .tag = 3};
    ASSERT_EQ(runner_submit(r, cmds, 1), 1);
    while (!got)
        got = runner_poll(r, ev, 8);
    ASSERT_EQ(runner_journal_error(r), 0);
    /* The directory goes: the snapshot cannot be written, the journal fails. */
    rmtree(dir);
    ASSERT_EQ(runner_submit(r, cmds + 1, 2), 2);
    for (;;) {
        struct pollfd p = {.fd = runner_event_fd(r), .events = POLLIN};
        size_t n = runner_poll(r, ev, 8);
        uint64_t v;
        for (size_t i = 0; i < n; i++)
            ASSERT_TRUE(ev[i].tag != 3); /* never released: not durable */
        if (n)
            continue;
        if (runner_journal_error(r))
            break;
        ASSERT_EQ(poll(&p, 1, 5000), 1); /* the failure wakes the consumer */
        ASSERT_TRUE(read(p.fd, &v, sizeof(v)) == (long)sizeof(v));
    }
    ASSERT_EQ(runner_journal_error(r), ENOENT);
    do
        runner_get_stats(r, &st);
    while (st.commands < 2);
    /* The engine thread may publish the snapshot's answer after the journal
       thread has failed: it is released (its requester learns of the
       failure), the command after it never is. */
    for (size_t n = runner_poll(r, ev, 8); n; n = runner_poll(r, ev, 8))
        for (size_t i = 0; i < n; i++)
            ASSERT_TRUE(ev[i].tag == 2 && ev[i].ev.type == RUNNER_EV_SNAPSHOT);
    ASSERT_EQ(st.journal_errno, ENOENT);
    ASSERT_EQ(st.journaled, 1);
    runner_destroy(r);
    eng_destroy(e);
}

/* With fsync off the journal thread leaves syncing to the operating system
   while it runs, and syncs the segment as it ends: a clean stop leaves the
   journal on disk. */
void test_runner_fsync_off_syncs_at_the_end(void)
{
    const char *dir = tmpdir();
    struct eng *e = make(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 64, .out_capacity = 256,
                                .journal_dir = dir, .fsync = JNL_FSYNC_OFF};
    struct runner *r = runner_create(e, &cfg);
    struct runner_event ev[256];
    struct runner_stats st;
    uint64_t rng = 5;

    ASSERT_EQ(runner_start(r), 0);
    for (uint64_t i = 0; i < 50; i++) {
        struct runner_cmd c = {.cmd = command(i, &rng), .tag = i + 1};
        while (!runner_submit(r, &c, 1))
            runner_poll(r, ev, 256);
    }
    do {
        runner_poll(r, ev, 256);
        runner_get_stats(r, &st);
    } while (st.journaled < 50);
    ASSERT_EQ(st.journal_syncs, 0); /* none while it runs */
    runner_request_stop(r);
    do {
        runner_poll(r, ev, 256);
        runner_get_stats(r, &st);
    } while (st.running || st.out_queued);
    ASSERT_EQ(st.journal_errno, 0);
    ASSERT_EQ(st.journal_syncs, 1);
    runner_destroy(r);
    eng_destroy(e);
    rmtree(dir);
}

void test_runner_snapshot_twice_at_one_seq(void)
{
    const char *dir = tmpdir();
    struct eng *e = make(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 64, .out_capacity = 64,
                                .journal_dir = dir, .fsync = JNL_FSYNC_BATCH};
    struct runner *r = runner_create(e, &cfg);
    struct runner_cmd cmds[4];
    struct runner_event ev[64];
    uint64_t rng = 4, snap_seq[4];
    size_t got = 0, snaps = 0;

    ASSERT_EQ(runner_start(r), 0);
    /* Before any command (seq 0), then twice after the first: the open
       segment has no record yet each time, so it is kept, not re-created. */
    cmds[0] = (struct runner_cmd){.cmd = {.type = RUNNER_CTL_SNAPSHOT}, .tag = 10};
    cmds[1] = (struct runner_cmd){.cmd = command(0, &rng), .tag = 1};
    cmds[2] = (struct runner_cmd){.cmd = {.type = RUNNER_CTL_SNAPSHOT}, .tag = 11};
    cmds[3] = (struct runner_cmd){.cmd = {.type = RUNNER_CTL_SNAPSHOT}, .tag = 12};
    ASSERT_EQ(runner_submit(r, cmds, 4), 4);
    while (snaps < 3) {
        size_t n = runner_poll(r, ev, 64);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].ev.type != RUNNER_EV_SNAPSHOT)
                continue;
            ASSERT_EQ(ev[i].tag, 10 + snaps);
            ASSERT_EQ(ev[i].ev.leaves, 0);
            snap_seq[snaps++] = ev[i].ev.seq;
        }
        got += n;
    }
    ASSERT_EQ(runner_journal_error(r), 0);
    ASSERT_EQ(snap_seq[0], 0);
    ASSERT_EQ(snap_seq[1], 1);
    ASSERT_EQ(snap_seq[2], 1);
    ASSERT_EQ(count_files(dir, "snapshot-"), 1);
    ASSERT_EQ(count_files(dir, "journal-"), 1);
    ASSERT_TRUE(got > 3);
    runner_destroy(r);
    eng_destroy(e);
    rmtree(dir);
}

/*
 * One command with more events than the output ring holds: its events are
 * published part by part, each part only once its record is journaled, so
 * the consumer can always take what is in the ring.
 */
void test_runner_journal_large_batch_small_ring(void)
{
    const char *dir = tmpdir();
    struct eng *e = make(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 2048, .out_capacity = 64,
                                .journal_dir = dir, .fsync = JNL_FSYNC_BATCH};
    struct runner *r = runner_create(e, &cfg);
    enum { MAKERS = 1500 };
    static struct runner_cmd cmds[MAKERS + 1];
    struct runner_event ev[64];
    struct runner_stats st;
    size_t sent = 0, got = 0, trades = 0;
    struct timespec t0, t;

    ASSERT_EQ(runner_start(r), 0);
    for (int i = 0; i < MAKERS; i++)
        cmds[i] = (struct runner_cmd){.cmd = {.type = ENG_CMD_NEW, .side = ENG_SELL, .order_type = ENG_LIMIT,
                                              .tif = ENG_GTC, .account = 1, .qty = 1, .price = 1000 + i},
                                      .tag = (uint64_t)i};
    /* A market buy that takes all of them: MAKERS trades from one command. */
    cmds[MAKERS] = (struct runner_cmd){.cmd = {.type = ENG_CMD_NEW, .side = ENG_BUY, .order_type = ENG_MARKET,
                                               .tif = ENG_IOC, .account = 2, .qty = MAKERS},
                                       .tag = MAKERS};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got < 2 * MAKERS + 1) {
        if (sent < MAKERS + 1)
            sent += runner_submit(r, cmds + sent, MAKERS + 1 - sent);
        size_t n = runner_poll(r, ev, 64);
        for (size_t i = 0; i < n; i++)
            trades += ev[i].ev.type == ENG_EV_TRADE;
        got += n;
        clock_gettime(CLOCK_MONOTONIC, &t);
        ASSERT_TRUE(t.tv_sec - t0.tv_sec < 20); /* no deadlock */
    }
    ASSERT_EQ(trades, MAKERS);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.journaled, MAKERS + 1);
    ASSERT_VERIFY(e);
    runner_destroy(r);
    eng_destroy(e);
    rmtree(dir);
}
