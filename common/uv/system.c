/* SPDX-License-Identifier: MIT */
/* Key files (docs/protocol.md, "Key files") and making key pairs and
 * invitations: the file system and the system's randomness, which the
 * protocol cores never touch (they draw from an injected kp_rng_t). */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/rng.h"
#include "common/z32.h"
#include "kadpunch_base.h"

#define KEY_FILE_HEADER "kadpunch secret key v1"
#define KEY_FILE_MAX 4096

static void system_fill(void *ctx, void *buf, size_t len) {
  (void)ctx;
  randombytes_buf(buf, len);
}

kp_rng_t kp_rng_system(void) {
  kp_rng_t r = {system_fill, NULL};
  return r;
}

void kp_keypair_generate(kp_keypair_t *kp) {
  crypto_sign_keypair(kp->public_key, kp->secret_key);
}

void kp_invite_generate(const uint8_t server_key[KP_PUBLIC_KEY_LEN], kp_invite_t *out) {
  memcpy(out->server_key, server_key, KP_PUBLIC_KEY_LEN);
  do {
    randombytes_buf(&out->id, sizeof(out->id));
  } while (!out->id); /* 0 means "no invitation" on the wire */
  randombytes_buf(out->secret, sizeof(out->secret));
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int kp_key_file_write(const char *path, const kp_keypair_t *kp, bool overwrite) {
  char text[512], pk[KP_KEY_TEXT_LEN + 1], seed[KP_KEY_TEXT_LEN + 1];
  kp_z32_encode(kp->public_key, KP_PUBLIC_KEY_LEN, pk);
  kp_z32_encode(kp->secret_key, KP_SEED_LEN, seed);
  int n = snprintf(text, sizeof(text),
                   "# kadpunch secret key: whoever has this file is this peer. Keep it 0600.\n"
                   "%s\npublic %s\nseed %s\n",
                   KEY_FILE_HEADER, pk, seed);
  sodium_memzero(seed, sizeof(seed));

  /* Replacing goes through a temporary file and rename(2), so a crash
   * leaves the old key or the new one, never half of one. */
  char tmp[4096];
  const char *target = path;
  if (overwrite) {
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
      sodium_memzero(text, sizeof(text));
      return KP_ENAMETOOLONG;
    }
    target = tmp;
  }
  int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  int err = fd < 0 ? -errno : 0;
  /* The umask may have cleared bits, never added them; still be exact. */
  if (!err && fchmod(fd, 0600) < 0) err = -errno;
  if (!err) err = write_all(fd, text, (size_t)n);
  if (!err && fsync(fd) < 0) err = -errno;
  if (fd >= 0 && close(fd) < 0 && !err) err = -errno;
  sodium_memzero(text, sizeof(text));
  if (!err && overwrite && rename(tmp, path) < 0) err = -errno;
  if (err && fd >= 0) unlink(target);
  return err;
}

/* Finds the line "name value" in text and copies value (without the line
 * end) into out. */
static bool field(const char *text, const char *name, char *out, size_t cap) {
  size_t nlen = strlen(name);
  const char *line = text;
  while (*line) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (len > nlen && !strncmp(line, name, nlen) && line[nlen] == ' ') {
      const char *v = line + nlen + 1;
      size_t vlen = len - nlen - 1;
      if (vlen && v[vlen - 1] == '\r') vlen--;
      if (vlen >= cap) return false;
      memcpy(out, v, vlen);
      out[vlen] = '\0';
      return true;
    }
    if (!end) break;
    line = end + 1;
  }
  return false;
}

static int parse_key_text(const char *text, kp_keypair_t *kp) {
  /* The first line that is not a comment is the format header. */
  const char *line = text;
  while (*line == '#' || *line == '\n') {
    const char *nl = strchr(line, '\n');
    if (!nl) return KP_EKEYFORMAT;
    line = nl + 1;
  }
  size_t hl = strlen(KEY_FILE_HEADER);
  if (strncmp(line, KEY_FILE_HEADER, hl) || (line[hl] != '\n' && line[hl] != '\r'))
    return KP_EKEYFORMAT;

  char pk_text[64], seed_text[64];
  uint8_t seed[KP_SEED_LEN], pk[KP_PUBLIC_KEY_LEN];
  int err = KP_EKEYFORMAT;
  if (field(line, "public", pk_text, sizeof(pk_text)) &&
      field(line, "seed", seed_text, sizeof(seed_text)) &&
      kp_z32_decode(pk_text, pk, sizeof(pk)) == 0 &&
      kp_z32_decode(seed_text, seed, sizeof(seed)) == 0) {
    kp_keypair_from_seed(kp, seed);
    /* The stored public key must be the seed's: catches damage and edits. */
    err = sodium_memcmp(pk, kp->public_key, sizeof(pk)) == 0 ? 0 : KP_EKEYFORMAT;
  }
  sodium_memzero(seed, sizeof(seed));
  sodium_memzero(seed_text, sizeof(seed_text));
  if (err) kp_keypair_wipe(kp);
  return err;
}

int kp_key_file_read(const char *path, kp_keypair_t *kp) {
  char text[KEY_FILE_MAX + 1];
  memset(kp, 0, sizeof(*kp));
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno == ELOOP ? KP_EKEYFORMAT : -errno;
  struct stat st;
  int err = 0;
  if (fstat(fd, &st) < 0)
    err = -errno;
  else if (S_ISDIR(st.st_mode))
    err = KP_EISDIR;
  else if (!S_ISREG(st.st_mode))
    err = KP_EKEYFORMAT;
  /* Like ssh: a secret others can read is not used, whoever we run as. */
  else if (st.st_mode & 077)
    err = KP_EKEYPERM;
  else if (st.st_size > KEY_FILE_MAX)
    err = KP_EKEYFORMAT;
  size_t len = 0;
  while (!err && len < KEY_FILE_MAX) {
    ssize_t r = read(fd, text + len, KEY_FILE_MAX - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) err = -errno;
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  text[len] = '\0';
  if (!err && strlen(text) != len) err = KP_EKEYFORMAT; /* a NUL inside: binary junk */
  if (!err) err = parse_key_text(text, kp);
  sodium_memzero(text, sizeof(text));
  return err;
}
