/*
 * pyengine.h - the public C API of the matching core.
 *
 * This header and the three it includes are the whole contract between the
 * core and its users: the Python binding (cffi parses this file after the C
 * preprocessor has run over it with -DPYENGINE_CDEF, which leaves out the
 * system includes), the server's engine thread, the C tests and the
 * benchmark. They hold only types, constants and prototypes; internals live
 * in the *_int.h / module headers. Users include this one.
 *
 * Commands go in as fixed-size `struct eng_cmd` records and events come out as
 * fixed-size `struct eng_event` records; both layouts are stable and are what
 * the batch path and the journal store. Semantics: docs/semantics.md.
 *
 * Threading: an engine is not thread-safe; one thread at a time may use it.
 */
#ifndef PYENGINE_H
#define PYENGINE_H

#include "pyengine_engine.h"  /* codes, records, the engine and its fast paths */
#include "pyengine_journal.h" /* snapshots, the journal, the high-water mark */
#include "pyengine_runner.h"  /* the engine thread, replication */

#endif /* PYENGINE_H */
