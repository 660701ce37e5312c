/* SPDX-License-Identifier: MIT */
/* Invitations kept in a server's state directory (docs/daemon.md,
 * "Invitations"). DIR/invites has one line per invitation,
 *
 *   ID SECRET EXPIRES [used]        (16 hex, 32 hex, unix seconds)
 *
 * and DIR/allow the keys let in, one per line (an allow file). `kadpunch
 * invite` appends an invitation; a server redeems it when a client proves
 * it, once: the line is marked used and the client's key appended to
 * DIR/allow. Every change holds an exclusive lock on DIR/invites.lock and
 * rewrites DIR/invites through a temporary file and a rename, so a crash
 * leaves the old file or the new one, and two processes cannot both redeem
 * one code. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node/cli/cli.h"

#define MAX_INVITES 1024

typedef struct entry_s {
  uint64_t id;
  uint8_t secret[16];
  uint64_t expires_s; /* unix seconds */
  bool used;
} entry_t;

static void path_in(const char *dir, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", dir, name);
}

static bool parse_entry(const char *line, entry_t *e) {
  char secret[33], used[8] = "";
  memset(e, 0, sizeof(*e));
  int n = sscanf(line, "%16" SCNx64 " %32s %" SCNu64 " %7s", &e->id, secret, &e->expires_s, used);
  if (n < 3 || strlen(secret) != 32) return false;
  for (int i = 0; i < 16; i++) {
    unsigned v;
    if (sscanf(secret + 2 * i, "%2x", &v) != 1) return false;
    e->secret[i] = (uint8_t)v;
  }
  e->used = !strcmp(used, "used");
  return e->id != 0;
}

/* Every well-formed line of the (locked) file; bad lines are dropped. */
static size_t read_entries(FILE *f, entry_t *out, size_t cap) {
  char line[256];
  size_t n = 0;
  rewind(f);
  while (n < cap && fgets(line, sizeof(line), f))
    if (parse_entry(line, &out[n])) n++;
  return n;
}

/* Made by root next to a server that runs as someone else (its unit runs
 * it with DynamicUser): a file goes to the directory's owner. Failing
 * leaves root's file: the server says so when it cannot redeem. */
static void give_to_dir_owner(const char *dir, int fd) {
  struct stat st;
  if (geteuid() != 0 || stat(dir, &st) || st.st_uid == 0) return;
  if (fchown(fd, st.st_uid, st.st_gid)) return;
}

static int write_entries(const char *dir, const entry_t *e, size_t n) {
  char path[4096], tmp[4096];
  path_in(dir, "invites", path, sizeof(path));
  path_in(dir, "invites.tmp", tmp, sizeof(tmp));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) give_to_dir_owner(dir, fd);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    if (fd >= 0) close(fd);
    return -errno;
  }
  for (size_t i = 0; i < n; i++) {
    char secret[33];
    for (int j = 0; j < 16; j++) snprintf(secret + 2 * j, 3, "%02x", e[i].secret[j]);
    fprintf(f, "%016" PRIx64 " %s %" PRIu64 "%s\n", e[i].id, secret, e[i].expires_s,
            e[i].used ? " used" : "");
  }
  int err = fflush(f) || fsync(fileno(f)) ? -errno : 0;
  fclose(f);
  if (!err && rename(tmp, path)) err = -errno;
  return err;
}

/* The lock is a file of its own: DIR/invites is replaced by a rename, and
 * a lock on the old file would not keep the next writer out. wait: block
 * (kadpunch invite); else a server's event loop tries for 20 ms and gives
 * up (the client is told to try again). A negative errno if not locked
 * (-EWOULDBLOCK: someone else holds it). */
static int lock_dir(const char *dir, bool wait) {
  char path[4096];
  path_in(dir, "invites.lock", path, sizeof(path));
  int fd = open(path, O_RDWR | O_CREAT, 0600);
  if (fd < 0) return -errno;
  for (int tries = 0; flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)); tries++) {
    if (wait || errno != EWOULDBLOCK || tries == 20) {
      int err = -errno;
      close(fd);
      return err;
    }
    usleep(1000);
  }
  return fd;
}

/* A state directory the server cannot use is the operator's to fix: said
 * on the server's side in full (the client only hears that the invitation
 * is not known here). */
static void say_unusable(const char *dir, const char *name, int err) {
  fprintf(stderr, "kadpunch: %s/%s: %s: invitations cannot be redeemed%s\n", dir, name,
          strerror(-err),
          err == -EACCES || err == -EPERM
              ? " (the state directory's files must belong to the user the server runs as; "
                "make invitations with kadpunch invite --control PATH)"
              : "");
  fflush(stderr);
}

/* DIR/invites (created 0600 if missing), under the lock. */
static FILE *open_invites(const char *dir) {
  char path[4096];
  path_in(dir, "invites", path, sizeof(path));
  int fd = open(path, O_RDWR | O_CREAT, 0600);
  FILE *f = fd >= 0 ? fdopen(fd, "r+") : NULL;
  if (!f && fd >= 0) close(fd);
  return f;
}

int kp_cli_invite_create(const char *dir, const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                         uint64_t expires_s, kp_invite_t *out) {
  int lock = lock_dir(dir, true);
  if (lock < 0) return lock;
  FILE *f = open_invites(dir);
  if (!f) {
    int err = errno ? -errno : UV_EIO;
    close(lock);
    return err;
  }
  give_to_dir_owner(dir, lock);
  give_to_dir_owner(dir, fileno(f));
  static entry_t entries[MAX_INVITES];
  size_t n = read_entries(f, entries, MAX_INVITES - 1);
  /* Spent and expired ones go: the file stays small. */
  uint64_t now_s = (uint64_t)time(NULL);
  size_t kept = 0;
  for (size_t i = 0; i < n; i++)
    if (!entries[i].used && entries[i].expires_s > now_s) entries[kept++] = entries[i];
  kp_invite_generate(server_key, out);
  entries[kept] = (entry_t){.id = out->id, .expires_s = expires_s};
  memcpy(entries[kept].secret, out->secret, 16);
  int err = write_entries(dir, entries, kept + 1);
  sodium_memzero(entries, sizeof(entries)); /* the secrets live in the file only */
  fclose(f);
  close(lock);
  return err;
}

static int append_allow(const char *dir, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  char path[4096], text[KP_KEY_TEXT_LEN + 1];
  path_in(dir, "allow", path, sizeof(path));
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd < 0) return -errno;
  kp_key_to_text(key, text);
  char line[KP_KEY_TEXT_LEN + 32];
  int len = snprintf(line, sizeof(line), "%s # invited\n", text);
  int err = write(fd, line, (size_t)len) == len && !fsync(fd) ? 0 : -errno;
  close(fd);
  return err;
}

int kp_cli_invite_redeem(const char *dir, const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                         const kp_client_hello_t *hello, uint64_t now_s) {
  int lock = lock_dir(dir, false);
  if (lock == -EWOULDBLOCK) return KP_EOVERLOADED; /* someone else holds it: try again */
  if (lock < 0) {
    say_unusable(dir, "invites.lock", lock);
    return KP_EINVITE;
  }
  FILE *f = open_invites(dir);
  if (!f) {
    say_unusable(dir, "invites", -errno);
    close(lock);
    return KP_EINVITE;
  }
  static entry_t entries[MAX_INVITES];
  size_t n = read_entries(f, entries, MAX_INVITES);
  int result = KP_EINVITE;
  for (size_t i = 0; i < n && result == KP_EINVITE; i++) {
    if (entries[i].id != hello->invite_id) continue;
    kp_invite_t inv = {.id = entries[i].id};
    memcpy(inv.server_key, server_key, KP_PUBLIC_KEY_LEN);
    memcpy(inv.secret, entries[i].secret, 16);
    /* Only the holder of the secret learns whether it was used or expired. */
    bool valid = kp_invite_check(&inv, hello->key, hello->invite_proof);
    sodium_memzero(&inv, sizeof(inv));
    if (!valid) continue;
    if (entries[i].used) {
      result = KP_EINVITEUSED;
    } else if (entries[i].expires_s <= now_s) {
      result = KP_EINVITEEXPIRED;
    } else {
      /* Burnt first: a failure after this costs the invitation, never
       * lets it be used twice. */
      entries[i].used = true;
      result = write_entries(dir, entries, n) || append_allow(dir, hello->key) ? KP_EINVITE : 0;
    }
  }
  sodium_memzero(entries, sizeof(entries));
  fclose(f);
  close(lock);
  return result;
}
