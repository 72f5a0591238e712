/*
 * attack_server.c: the attacked server's figures, read from /proc: its
 * resident memory, its open descriptors and its children (the workers),
 * during the attack and after it, and then the TCP connections that it and
 * its workers still hold.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attack_private.h"

/* VmRSS of /proc/PID/status, in bytes; -ESRCH once the process is gone. */
static int read_rss(pid_t pid, uint64_t *bytes) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *file = fopen(path, "re");
  if (!file) return -ESRCH;
  *bytes = 0;
  while (fgets(line, sizeof line, file))
    if (strncmp(line, "VmRSS:", 6) == 0) *bytes = strtoull(line + 6, NULL, 10) * 1024;
  fclose(file);
  return 0;
}

/* The entries of /proc/PID/fd; -ESRCH once the process is gone. */
static int count_descriptors(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  DIR *directory = opendir(path);
  if (!directory) return -ESRCH;
  int count = 0;
  for (struct dirent *entry; (entry = readdir(directory));)
    if (entry->d_name[0] != '.') count++;
  closedir(directory);
  return count;
}

/* The processes whose parent is `pid` (the field after the name in
   /proc/N/stat; the name may hold spaces and parentheses, so it is cut at
   the last ')'): how many, the first `capacity` of them in `children`. */
static int list_children(pid_t pid, pid_t *children, int capacity) {
  DIR *proc = opendir("/proc");
  if (!proc) return 0;
  int count = 0;
  for (struct dirent *entry; (entry = readdir(proc));) {
    if (entry->d_name[0] < '1' || entry->d_name[0] > '9') continue;
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%s/stat", entry->d_name);
    FILE *file = fopen(path, "re");
    if (!file) continue;
    size_t length = fread(stat, 1, sizeof stat - 1, file);
    fclose(file);
    stat[length] = 0;
    char *close = strrchr(stat, ')');
    int parent = 0;
    if (close && sscanf(close + 1, " %*c %d", &parent) == 1 && parent == pid) {
      if (count < capacity) children[count] = (pid_t)atoi(entry->d_name);
      count++;
    }
  }
  closedir(proc);
  return count;
}

int attack_server_read(pid_t pid, attack_server_figures_t *figures) {
  memset(figures, 0, sizeof *figures);
  int descriptors = count_descriptors(pid);
  if (descriptors < 0 || read_rss(pid, &figures->rss_bytes) < 0) return -ESRCH;
  figures->alive = 1;
  figures->descriptors = descriptors;
  figures->children = list_children(pid, NULL, 0);
  return 0;
}

/* Adds the inodes of the sockets that `pid` holds to `*inodes` (`*count`
   of them, room for `*capacity`, grown as needed). */
static void add_sockets(pid_t pid, unsigned long **inodes, size_t *count, size_t *capacity) {
  char path[64], link[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  DIR *directory = opendir(path);
  if (!directory) return;
  for (struct dirent *entry; (entry = readdir(directory));) {
    char name[64 + 256];
    snprintf(name, sizeof name, "%s/%s", path, entry->d_name);
    ssize_t length = readlink(name, link, sizeof link - 1);
    unsigned long inode;
    if (length <= 0) continue;
    link[length] = 0;
    if (sscanf(link, "socket:[%lu]", &inode) != 1) continue;
    if (*count == *capacity) {
      size_t larger = *capacity ? *capacity * 2 : 256;
      unsigned long *grown = realloc(*inodes, larger * sizeof *grown);
      if (!grown) break;
      *inodes = grown;
      *capacity = larger;
    }
    (*inodes)[(*count)++] = inode;
  }
  closedir(directory);
}

static int compare_inodes(const void *a, const void *b) {
  unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
  return x < y ? -1 : x > y;
}

/* The TCP connections (in any state but LISTEN) of /proc/PID/net/`table`
   whose inode is among `inodes` (sorted). */
static int count_in_table(pid_t pid, const char *table, const unsigned long *inodes, size_t count) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/net/%s", (int)pid, table);
  FILE *file = fopen(path, "re");
  if (!file) return 0;
  int found = 0;
  while (fgets(line, sizeof line, file)) {
    unsigned state;
    unsigned long inode;
    /* sl local remote st tx:rx tr:when retrnsmt uid timeout inode */
    if (sscanf(line, " %*s %*s %*s %x %*s %*s %*s %*s %*s %lu", &state, &inode) != 2) continue;
    if (inode && state != 0x0A && bsearch(&inode, inodes, count, sizeof *inodes, compare_inodes))
      found++;
  }
  fclose(file);
  return found;
}

/* TCP connections on sockets that `pid` or one of its children holds. */
static int count_connections(pid_t pid) {
  pid_t children[1024];
  int child_count = list_children(pid, children, 1024);
  unsigned long *inodes = NULL;
  size_t count = 0, capacity = 0;
  add_sockets(pid, &inodes, &count, &capacity);
  for (int i = 0; i < child_count && i < 1024; i++)
    add_sockets(children[i], &inodes, &count, &capacity);
  int connections = 0;
  if (count > 0) {
    qsort(inodes, count, sizeof *inodes, compare_inodes);
    connections =
        count_in_table(pid, "tcp", inodes, count) + count_in_table(pid, "tcp6", inodes, count);
  }
  free(inodes);
  return connections;
}

void attack_server_record(pid_t pid, procord_bench_attack_result_t *result) {
  attack_server_figures_t now;
  if (attack_server_read(pid, &now) < 0) {
    result->server_exited = 1;
    return;
  }
  if (now.rss_bytes > result->server_rss_max_bytes) result->server_rss_max_bytes = now.rss_bytes;
  if (now.descriptors > result->server_descriptors_max)
    result->server_descriptors_max = now.descriptors;
  if (now.children > result->server_children_max) result->server_children_max = now.children;
}

int attack_server_quiet(pid_t pid, int limit_ms, attack_server_figures_t *figures) {
  uint64_t deadline = procord_bench_now_ns() + (uint64_t)limit_ms * 1000000u;
  attack_server_figures_t earlier;
  if (attack_server_read(pid, &earlier) < 0) return -ESRCH;
  for (;;) {
    nanosleep(&(struct timespec){.tv_nsec = 200 * 1000000}, NULL);
    if (attack_server_read(pid, figures) < 0) return -ESRCH;
    if ((figures->descriptors == earlier.descriptors && figures->children == earlier.children) ||
        procord_bench_now_ns() >= deadline)
      return 0;
    earlier = *figures;
  }
}

/* What the workers the server keeps account for: a worker costs it three
   descriptors (its control socket, its pidfd, its session). */
#define DESCRIPTORS_PER_WORKER 3

void attack_server_settle(pid_t pid, int limit_ms, procord_bench_attack_result_t *result) {
  uint64_t start = procord_bench_now_ns();
  uint64_t deadline = start + (uint64_t)limit_ms * 1000000u;
  attack_server_figures_t now;
  for (;;) {
    if (attack_server_read(pid, &now) < 0) {
      result->server_exited = 1;
      break;
    }
    int kept_workers = now.children > result->server_children_before
                           ? now.children - result->server_children_before
                           : 0;
    if (now.descriptors <=
            result->server_descriptors_before + DESCRIPTORS_PER_WORKER * kept_workers &&
        count_connections(pid) == 0) {
      result->server_descriptors_back = 1;
      break;
    }
    if (procord_bench_now_ns() >= deadline) break;
    nanosleep(&(struct timespec){.tv_nsec = 50 * 1000000}, NULL);
  }
  result->server_settle_ns = procord_bench_now_ns() - start;
  result->server_descriptors_after = now.descriptors;
  result->server_children_after = now.children;
  result->server_connections_after = result->server_exited ? 0 : count_connections(pid);
}
