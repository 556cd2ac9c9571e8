/*
 * pyengine_journal.h - what makes an engine durable: snapshots of its
 * state, the journal's records and segments, the high-water mark. Part of
 * pyengine.h, which is what users include.
 */
#ifndef PYENGINE_JOURNAL_H
#define PYENGINE_JOURNAL_H

#ifndef PYENGINE_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

#include "pyengine_engine.h"

/*
 * ---- Snapshots -------------------------------------------------------------
 *
 * A snapshot is the whole state of an engine after command `seq`: its
 * instruments, every resting order in priority order, and its id counters.
 * Loading one into an empty engine and replaying the journal after `seq`
 * gives back exactly the state at the end of the journal.
 */

/*
 * Serialize `e` into a malloc'ed buffer (free it with free() or
 * eng_free_buffer()); stores its size in *len. Returns NULL when out of memory.
 * O(open orders).
 */
void *eng_snapshot_serialize(const struct eng *e, size_t *len);
void eng_free_buffer(void *buf);
/*
 * Write a serialized snapshot to `dir`/snapshot-<seq>.snap atomically
 * (temporary file, fsync, rename, fsync of the directory). Returns 0, or -1
 * with errno set (no file is left behind then).
 */
int eng_snapshot_write_file(const char *dir, const void *buf, size_t len);
/*
 * Load a snapshot file into `e`, which must have no instruments yet. Returns
 * ENG_OK, or ENG_CORRUPT for a file that is not a whole, valid snapshot
 * (its checksum or structure is wrong; `e` is then unusable and must be
 * destroyed), or ENG_INVALID_ARGUMENT when `e` is not empty, the file
 * cannot be read (errno set) or it is of an engine of the other order-id
 * mode (eng_config.caller_order_ids).
 */
int eng_snapshot_load(struct eng *e, const char *path, uint64_t *seq);
/*
 * A 64-bit hash of the engine's matching state: counters, instruments and
 * every resting order in priority order. Two engines with the same hash hold
 * the same books (to the odds of a 64-bit collision).
 */
uint64_t eng_state_hash(const struct eng *e);

/*
 * ---- The journal -----------------------------------------------------------
 *
 * A journal segment file starts with a header naming the instruments, then
 * fixed-size records, one per command the engine sequenced, in sequence
 * order. Each record is checksummed (CRC-32C), so a torn or corrupt record is
 * found, and everything from it on is left out of a replay.
 */
/* When the runner's journal thread syncs the segment: OFF only as it ends
   (a clean stop), BATCH after each write of the records gathered, ALWAYS
   after each record. */
enum jnl_fsync { JNL_FSYNC_OFF = 0, JNL_FSYNC_BATCH = 1, JNL_FSYNC_ALWAYS = 2 };

enum jnl_stop {
    JNL_END = 0,          /* the file ends after a whole record */
    JNL_TORN = 1,         /* the file ends inside a record (a write cut short) */
    JNL_BAD_CHECKSUM = 2, /* a record's checksum or length is wrong */
    JNL_SEQ_GAP = 3,      /* a record's seq is not the next one */
    JNL_BAD_HEADER = 4,   /* the file has no valid segment header */
    JNL_IO_ERROR = 5,     /* the file could not be read (errno) */
    JNL_APPLY_ERROR = 6   /* the engine ran out of memory processing a record */
};

struct jnl_record {
    uint32_t len;  /* sizeof(struct jnl_record) */
    uint32_t crc;  /* CRC-32C of the bytes after this field */
    uint64_t seq;  /* the engine's sequence number of the command */
    int64_t ts;    /* when it was received (the command's ts) */
    struct eng_cmd cmd;
};

struct jnl_scan {
    uint64_t first_seq;   /* the segment's first sequence number (header) */
    uint64_t records;     /* whole, valid records read */
    uint64_t applied;     /* of them, applied to the engine */
    uint64_t last_seq;    /* seq of the last valid record (first_seq - 1 if none) */
    uint64_t valid_bytes; /* file offset just after the last valid record */
    uint64_t file_bytes;
    int32_t stop;         /* enum jnl_stop */
    int32_t err;          /* errno for JNL_IO_ERROR, ENOMEM for JNL_APPLY_ERROR */
    uint32_t ninstruments;
    uint32_t reserved;
    uint64_t skipped;     /* records up to after_seq passed over unread */
    /* After a stop other than JNL_END, JNL_IO_ERROR and JNL_APPLY_ERROR: the
       whole, valid records from valid_bytes to the end of the file, found at
       any byte offset (damage may add or remove bytes), and the lowest and
       highest seq among them (0 when there are none). A write cut short
       leaves none; damage in the middle of a segment leaves those after it. */
    uint64_t following;
    uint64_t following_min_seq;
    uint64_t following_max_seq;
};

/*
 * Read the journal segment `path` up to its first invalid record. With `e`
 * not NULL, apply every record with seq > after_seq to it (each must carry
 * the engine's next sequence number, else the scan stops with JNL_SEQ_GAP);
 * records up to after_seq are then passed over unread when the one at
 * after_seq is found whole where it should be (out->skipped);
 * the engine's event buffer is cleared as it goes. A record whose command
 * runs out of memory (rejected or cancelled no_memory) stops the scan with
 * JNL_APPLY_ERROR: the runner journals no such command (it ran otherwise
 * live, where memory was short), so replaying past it would not rebuild the
 * state its sender was told of. With `e` NULL, only check.
 * `counts`, if not NULL, receives the number of records per command type
 * (indexed by type, ENG_CMD__COUNT entries; 0 counts unknown types). When
 * the scan stops early, the rest of the file is searched for valid records
 * (out->following). Returns ENG_OK, even when the scan stopped early: read
 * out->stop.
 */
int jnl_scan_file(const char *path, struct eng *e, uint64_t after_seq, struct jnl_scan *out,
                  uint64_t *counts);
/*
 * Apply the commands of `n` records (already checked: consecutive, valid,
 * the first carrying the engine's next seq) to `e`, keeping their events in
 * its buffer, as a replay that wants them does. Returns how many ran as they
 * did live: fewer than n when the next one ran out of memory, either not run
 * at all (no room for its events) or run and rejected or cancelled no_memory
 * (where jnl_scan_file stops too): the engine is then not the journal's.
 */
size_t jnl_apply_records(struct eng *e, const struct jnl_record *records, size_t n);
/* The instrument specs of a segment's header into `out` (up to `max`).
   Returns how many the header holds, or -1 if it is not valid. */
int64_t jnl_read_instruments(const char *path, struct eng_instrument_spec *out, size_t max);

/*
 * The high-water mark: `dir`/HIGHWATER holds counters that no engine
 * journaling into `dir` has gone beyond. The journal thread moves it
 * JNL_MARK_BLOCK past the counters of the records it is about to write
 * whenever they would pass it, before writing them: so it bounds every seq
 * and id that ever left a server, those of records lost later included, at
 * the cost of one small synced file write per block.
 */
enum jnl_mark_block { JNL_MARK_BLOCK = 1 << 20 };
/*
 * Read the mark into *out. Returns ENG_OK (all zero when there is no mark
 * yet), ENG_CORRUPT for a file that is not a whole, valid mark, or
 * ENG_INVALID_ARGUMENT when it cannot be read (errno set).
 */
int eng_mark_read(const char *dir, struct eng_counters *out);
/*
 * Replace the mark atomically (temporary file, fsync, rename, fsync of the
 * directory). Returns 0, or -1 with errno set (the old mark stays then).
 */
int eng_mark_write(const char *dir, const struct eng_counters *mark);

#endif /* PYENGINE_JOURNAL_H */
