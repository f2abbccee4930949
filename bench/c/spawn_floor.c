/* The floor for the exec workload: plain C, no event library. N runs of
 * `true`, at most 50 at a time, each started with posix_spawnp with its
 * stdout and stderr on pipes that are read to their end (as every peer
 * captures them), reaped with waitpid. One poll() over every open pipe
 * drives it. Prints sum=<sum of i over the runs that exited 0>.
 *
 * usage: spawn_floor N
 * Exit status 0 on success, 1 when a run cannot be started. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONCURRENCY 50

extern char **environ;

typedef struct {
  pid_t pid;
  int fd[2]; /* stdout, stderr; -1 once at their end */
  long i;
} run_t;

static int start(run_t *r, long i) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return -1;
  if (pipe2(err, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  char *argv[] = {"true", NULL};
  int rc = posix_spawnp(&r->pid, "true", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  if (rc != 0) return -1;
  r->fd[0] = out[0];
  r->fd[1] = err[0];
  r->i = i;
  return 0;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000, next = 1, done = 0;
  long long sum = 0;
  run_t runs[CONCURRENCY];
  int live = 0;
  char buf[65536];
  while (done < n) {
    while (live < CONCURRENCY && next <= n) {
      if (start(&runs[live], next++) != 0) {
        perror("spawn_floor: true");
        return 1;
      }
      live++;
    }
    struct pollfd pfd[2 * CONCURRENCY];
    int map[2 * CONCURRENCY], np = 0;
    for (int k = 0; k < live; k++)
      for (int j = 0; j < 2; j++)
        if (runs[k].fd[j] >= 0) {
          pfd[np] = (struct pollfd){.fd = runs[k].fd[j], .events = POLLIN};
          map[np++] = k * 2 + j;
        }
    if (poll(pfd, (nfds_t)np, -1) < 0) continue;
    for (int p = 0; p < np; p++) {
      if (pfd[p].revents == 0) continue;
      run_t *r = &runs[map[p] / 2];
      int *fd = &r->fd[map[p] % 2];
      if (read(*fd, buf, sizeof buf) <= 0) {
        close(*fd);
        *fd = -1;
      }
    }
    for (int k = 0; k < live;) {
      if (runs[k].fd[0] >= 0 || runs[k].fd[1] >= 0) {
        k++;
        continue;
      }
      int st;
      if (waitpid(runs[k].pid, &st, 0) == runs[k].pid && WIFEXITED(st) &&
          WEXITSTATUS(st) == 0)
        sum += runs[k].i;
      done++;
      runs[k] = runs[--live];
    }
  }
  printf("sum=%lld\n", sum);
  return 0;
}
