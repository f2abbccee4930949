/* simdjson's DOM parser behind a C interface (bindings/json_simd.cc).
 *
 * A parse leaves the document as simdjson's tape: 64-bit words, each with
 * a type character in the top byte and a 56-bit payload
 * (https://github.com/simdjson/simdjson/blob/master/doc/tape.md):
 *   'r' root (payload: index of the last word)   'n' 't' 'f' literals
 *   '{' '[' start (low 32 bits: index after the matching end; bits 32-55
 *           the element count, saturated at 0xFFFFFF)   '}' ']' end
 *   '"' string (payload: offset in strings of a 32-bit little-endian
 *       length, then the bytes)
 *   'l' int64, 'u' uint64, 'd' double: the value is the next word. */
#ifndef AR_JSON_SIMD_H
#define AR_JSON_SIMD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ar__json_parser_s ar__json_parser_t;

typedef struct {
  const uint64_t *tape;   /* valid until the parser's next parse or free */
  const uint8_t *strings; /* likewise */
  const char *message;    /* on failure: simdjson's words (static) */
  int code;               /* on failure: simdjson's error code */
  size_t offset;          /* on failure: where, 0-based (best effort) */
} ar__json_tape_t;

/* Returns a parser, or NULL when memory runs out. It keeps its buffers
 * (sized by the largest document so far) for the next parse. */
ar__json_parser_t *ar__json_parser_new(void);
void ar__json_parser_free(ar__json_parser_t *p);

/* Parses len bytes at buf (any alignment or padding: simdjson copies when
 * it must). Returns 0 with the tape in *out, or -1 with the message, code
 * and offset of the error. Never throws. */
int ar__json_parse(ar__json_parser_t *p, const char *buf, size_t len,
                   ar__json_tape_t *out);

const char *ar__json_simd_version(void); /* "3.0.1" */

#ifdef __cplusplus
}
#endif

#endif
