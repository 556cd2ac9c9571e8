/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of journal records and
 * snapshots. Uses the SSE4.2 crc32 instruction when the CPU has it (checked
 * once at run time), a table otherwise; both give the same values.
 */
#ifndef ENG_CRC32C_H
#define ENG_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue `crc` (0 to start) over `len` bytes. Thread-safe, can't fail. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif /* ENG_CRC32C_H */
