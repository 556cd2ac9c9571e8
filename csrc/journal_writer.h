/*
 * journal_writer.h - the runner's journal thread (journal_writer.c), whose
 * state is struct jw in runner_int.h. The engine thread hands it items
 * through r->jw.ring; these are the runner's handles on its life.
 */
#ifndef ENG_JOURNAL_WRITER_H
#define ENG_JOURNAL_WRITER_H

struct runner;

/*
 * Prepare to journal into `dir`: read the high-water mark there and open the
 * first segment, after the engine's last command. Returns 0, or -1 with errno
 * set (EBADMSG for a damaged mark); jw_close undoes what was done.
 */
int jw_open(struct runner *r, const char *dir);
/* Start the journal thread. Returns 0 or an errno. */
int jw_start(struct runner *r);
/* No more items come (the engine thread is done, or never started): the
   thread writes what is queued and ends. Can't fail. */
void jw_finish(struct runner *r);
/* Wait for the thread to end (after jw_finish). */
void jw_join(struct runner *r);
/* Close the segment and free the journal's memory; after jw_join, or with no
   thread started. Safe on a runner that never journaled. */
void jw_close(struct runner *r);

#endif /* ENG_JOURNAL_WRITER_H */
