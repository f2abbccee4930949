/* The floor for the http workload: plain C driving libcurl's multi
 * interface, no Lua, no JSON decoder. N GETs of BASE + (i % 100) + ".json"
 * with 64 easy handles that are reused (so are their keep-alive
 * connections, from the multi handle's pool) and at most 64 transfers in
 * flight. Each body is kept; the "n" field is read with strtol after a
 * strstr so the line printed, sum=..., matches the other programs.
 *
 * usage: curl_multi N BASE_URL
 * Exit status 0 on success, 1 on any failed transfer or bad response. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define HANDLES 64

typedef struct {
  CURL *easy;
  char body[4096];
  size_t len;
} slot_t;

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userp) {
  slot_t *s = userp;
  size_t n = size * nmemb;
  if (s->len + n >= sizeof s->body) return 0; /* aborts: unexpectedly big */
  memcpy(s->body + s->len, data, n);
  s->len += n;
  return n;
}

/* Points s at URL number i and adds it to the multi handle. */
static int start(CURLM *multi, slot_t *s, const char *base, long i) {
  char url[512];
  snprintf(url, sizeof url, "%s%ld.json", base, i % 100);
  s->len = 0;
  curl_easy_setopt(s->easy, CURLOPT_URL, url);
  return curl_multi_add_handle(multi, s->easy) == CURLM_OK ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s N BASE_URL\n", argv[0]);
    return 2;
  }
  long n = strtol(argv[1], NULL, 10);
  const char *base = argv[2];
  long next = 1, done = 0, sum = 0;
  int failed = 0;
  slot_t slots[HANDLES];

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM *multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)HANDLES);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)HANDLES);
  for (int k = 0; k < HANDLES; k++) {
    slots[k].easy = curl_easy_init();
    curl_easy_setopt(slots[k].easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(slots[k].easy, CURLOPT_WRITEDATA, &slots[k]);
    curl_easy_setopt(slots[k].easy, CURLOPT_PRIVATE, &slots[k]);
    if (next <= n && start(multi, &slots[k], base, next++) != 0) failed = 1;
  }

  while (done < n && !failed) {
    int running = 0, msgs;
    if (curl_multi_perform(multi, &running) != CURLM_OK) {
      failed = 1;
      break;
    }
    CURLMsg *m;
    while ((m = curl_multi_info_read(multi, &msgs)) != NULL) {
      if (m->msg != CURLMSG_DONE) continue;
      slot_t *s;
      long status = 0;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result != CURLE_OK || status != 200) {
        fprintf(stderr, "transfer failed: %s, status %ld\n",
                curl_easy_strerror(m->data.result), status);
        failed = 1;
        break;
      }
      s->body[s->len] = '\0';
      const char *f = strstr(s->body, "\"n\":");
      if (f == NULL) {
        fprintf(stderr, "no \"n\" in body\n");
        failed = 1;
        break;
      }
      sum += strtol(f + 4, NULL, 10);
      done++;
      curl_multi_remove_handle(multi, s->easy);
      if (next <= n && start(multi, s, base, next++) != 0) failed = 1;
    }
    if (done < n && !failed &&
        curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
      failed = 1;
  }

  for (int k = 0; k < HANDLES; k++) {
    curl_multi_remove_handle(multi, slots[k].easy);
    curl_easy_cleanup(slots[k].easy);
  }
  curl_multi_cleanup(multi);
  curl_global_cleanup();
  if (failed) return 1;
  printf("sum=%ld\n", sum);
  return 0;
}
