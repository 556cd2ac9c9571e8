/*
 * journal.h - the journal's file formats (segments, the high-water mark), its
 * writing (for the runner's journal thread, journal_writer.c) and reading
 * (public: jnl_scan_file, eng_mark_read in pyengine_journal.h).
 */
#ifndef ENG_JOURNAL_H
#define ENG_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pyengine_journal.h"

#define JNL_MAGIC "PYENGJL1"
enum { JNL_VERSION = 1 };

/* The start of every segment file; the instrument specs follow it. */
struct jnl_header {
    char magic[8];
    uint32_t version;
    uint32_t record_size;  /* sizeof(struct jnl_record) */
    uint64_t first_seq;    /* the seq of the segment's first record */
    uint32_t ninstruments;
    uint32_t crc;          /* CRC-32C of the header (this field 0) and the specs */
};

/* The high-water mark file (eng_mark_read, eng_mark_write). */
#define JNL_MARK_FILE "HIGHWATER"
#define JNL_MARK_MAGIC "PYENGHW1"
struct jnl_mark {
    char magic[8];
    uint64_t seq;
    uint64_t order_id;
    uint64_t trade_id;
    uint32_t crc;      /* CRC-32C of the bytes before this field */
    uint32_t reserved;
};

/* Fill in a record's length and checksum. Can't fail. */
void jnl__seal(struct jnl_record *r);
/* Are a record's length and checksum right? */
bool jnl__record_valid(const struct jnl_record *r);

/*
 * Did the events of one command say it ran out of memory (a no_memory reject,
 * or an order cancelled no_memory)? The engine sequenced it all the same, but
 * replayed where memory is to spare it would run otherwise: a durable log must
 * not hold it (runner.c), and a replay that meets one stops (jnl_scan_file).
 */
static inline bool jnl__out_of_memory(const struct eng_event *ev, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((ev[i].type == ENG_EV_REJECTED && ev[i].reason == ENG_NO_MEMORY) ||
            (ev[i].type == ENG_EV_CANCELLED && ev[i].reason == ENG_CANCEL_NO_MEMORY))
            return true;
    return false;
}

/*
 * Create `dir`/journal-<first_seq>.log with its header (naming e's
 * instruments), fsync it and the directory. Returns the open descriptor
 * (positioned at the end, O_APPEND), or -1 with errno set.
 */
int jnl__open_segment(const char *dir, uint64_t first_seq, const struct eng *e);

#endif /* ENG_JOURNAL_H */
