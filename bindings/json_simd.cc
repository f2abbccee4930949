// simdjson behind a small C interface (json_simd.h): a parse yields
// simdjson's tape (its documented DOM layout, doc/tape.md), which
// bindings/ljson.c walks in C to build Lua values. So no Lua call, and no
// Lua error (a longjmp), ever crosses a C++ frame, and nothing C++ throws:
// simdjson is used through its error-code API only.
#include <cstdlib>
#include <cstring>
#include <new>
#include <simdjson.h>

#include "json_simd.h"

using namespace simdjson;

struct ar__json_parser_s {
  dom::parser dom;
};

extern "C" ar__json_parser_t *ar__json_parser_new(void) {
  return new (std::nothrow) ar__json_parser_t();
}

extern "C" void ar__json_parser_free(ar__json_parser_t *p) { delete p; }

// Walks a value with the On-Demand API until it fails, for the position of
// the first error (the DOM parser reports only a code). Returns the error.
static const size_t DEPTH_LIMIT = 1024; // dom::parser's default

static error_code walk(ondemand::value v, size_t depth) {
  if (depth >= DEPTH_LIMIT) return DEPTH_ERROR;
  ondemand::json_type t;
  error_code e = v.type().get(t);
  if (e) return e;
  switch (t) {
  case ondemand::json_type::array: {
    ondemand::array a;
    if ((e = v.get_array().get(a))) return e;
    for (auto item : a) {
      ondemand::value iv;
      if ((e = item.get(iv))) return e;
      if ((e = walk(iv, depth + 1))) return e;
    }
    return SUCCESS;
  }
  case ondemand::json_type::object: {
    ondemand::object o;
    if ((e = v.get_object().get(o))) return e;
    for (auto field : o) {
      std::string_view k;
      if ((e = field.unescaped_key().get(k))) return e;
      ondemand::value fv;
      if ((e = field.value().get(fv))) return e;
      if ((e = walk(fv, depth + 1))) return e;
    }
    return SUCCESS;
  }
  case ondemand::json_type::number: {
    double d;
    ondemand::number_type nt;
    if ((e = v.get_number_type().get(nt))) return e;
    if (nt == ondemand::number_type::floating_point_number)
      return v.get_double().get(d);
    if (nt == ondemand::number_type::signed_integer) {
      int64_t i;
      return v.get_int64().get(i);
    }
    uint64_t u;
    return v.get_uint64().get(u);
  }
  case ondemand::json_type::string: {
    std::string_view s;
    return v.get_string().get(s);
  }
  case ondemand::json_type::boolean: {
    bool b;
    return v.get_bool().get(b);
  }
  case ondemand::json_type::null: {
    bool n;
    if ((e = v.is_null().get(n))) return e;
    return n ? SUCCESS : INCORRECT_TYPE;
  }
  }
  return SUCCESS;
}

// The offset of the first error in buf, or len when none is found.
static size_t locate(const char *buf, size_t len) {
  padded_string copy(buf, len);
  // Deeper than the DOM parser's limit, so that the walk itself stops at
  // the value that is too deep (walk's limit) before the iterator's own.
  ondemand::parser od;
  if (copy.data() == nullptr || od.allocate(len, 2 * DEPTH_LIMIT)) return 0;
  ondemand::document doc;
  if (od.iterate(copy).get(doc)) return 0;
  const char *at = nullptr;
  ondemand::value v;
  error_code e = doc.get_value().get(v);
  if (!e) e = walk(v, 0);
  if (doc.current_location().get(at) || at == nullptr) return len;
  size_t off = size_t(at - copy.data());
  return off < len ? off : len;
}

// Whether the integer literal s[0..n) (digits, after any '-') is outside
// the 64-bit range simdjson's DOM parser accepts, [-2^63, 2^64).
static bool too_big(const char *s, size_t n, bool neg) {
  if (n != 19 && n != 20) return n > 20;
  if (n == 20) return neg || memcmp(s, "18446744073709551615", 20) > 0;
  return neg && memcmp(s, "9223372036854775808", 19) > 0;
}

// simdjson 3.0's DOM parser rejects integers outside the 64-bit range,
// which JSON allows and which other decoders read as floats. This returns
// a malloc'd copy of buf with ".0" after each such integer (so that it
// parses as the nearest double), its length in *n, and in *at (malloc'd
// too) the offsets in buf where ".0" went, *nat of them; NULL when there
// is none (or no memory). Only strings need telling apart: the copy is
// then parsed, and judged, by simdjson like any document.
static char *widen(const char *buf, size_t len, size_t *n, size_t **at,
                   size_t *nat) {
  size_t extra = 0;
  char *out = nullptr;
  *nat = 0;
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 1 && extra == 0) return nullptr;
    if (pass == 1) {
      out = (char *)malloc(len + extra);
      *at = (size_t *)malloc(extra / 2 * sizeof **at);
      if (out == nullptr || *at == nullptr) {
        free(out);
        free(*at);
        return nullptr;
      }
    }
    size_t o = 0;
    bool in_string = false;
    for (size_t i = 0; i < len;) {
      char c = buf[i];
      if (!in_string && ((c >= '0' && c <= '9') || c == '-')) {
        size_t d = i + (c == '-'), j = d;
        while (j < len && buf[j] >= '0' && buf[j] <= '9')
          j++;
        bool integer =
            j == len || (buf[j] != '.' && buf[j] != 'e' && buf[j] != 'E');
        bool big = integer && too_big(buf + d, j - d, c == '-');
        if (out != nullptr) {
          memcpy(out + o, buf + i, j - i);
          o += j - i;
          if (big) {
            memcpy(out + o, ".0", 2);
            o += 2;
            (*at)[(*nat)++] = j;
          }
        } else if (big) {
          extra += 2;
        }
        i = j;
        continue;
      }
      size_t step = in_string && c == '\\' && i + 1 < len ? 2 : 1;
      if (c == '"' && step == 1) in_string = !in_string;
      if (out != nullptr) memcpy(out + o, buf + i, step);
      o += step;
      i += step;
    }
    *n = o;
  }
  return out;
}

extern "C" int ar__json_parse(ar__json_parser_t *p, const char *buf, size_t len,
                              ar__json_tape_t *out) {
  dom::element root;
  error_code e = p->dom.parse(buf, len, true).get(root);
  char *wide = nullptr;
  size_t wlen = 0, *at = nullptr, nat = 0;
  if (e == NUMBER_ERROR && (wide = widen(buf, len, &wlen, &at, &nat)))
    e = p->dom.parse(wide, wlen, true).get(root);
  if (e) {
    out->message = error_message(e);
    out->code = int(e);
    if (wide == nullptr) {
      out->offset = locate(buf, len);
    } else { /* found in the copy, told in buf's offsets */
      size_t w = locate(wide, wlen), k = 0;
      while (k < nat && at[k] + 2 * k + 2 <= w)
        k++;
      out->offset = w - 2 * k;
    }
  }
  // The tape keeps no pointer into its input: the copy can go.
  free(wide);
  free(at);
  if (e) return -1;
  out->tape = p->dom.doc.tape.get();
  out->strings = p->dom.doc.string_buf.get();
  out->message = nullptr;
  out->code = 0;
  out->offset = 0;
  return 0;
}

extern "C" const char *ar__json_simd_version(void) {
#define AR_STR_(x) #x
#define AR_STR(x) AR_STR_(x)
  return AR_STR(SIMDJSON_VERSION);
}
