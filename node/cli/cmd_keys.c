/* SPDX-License-Identifier: MIT */
/* kadpunch keygen: make an identity. */
#include <errno.h>
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

#include "node/cli/cli.h"

static const char help[] =
    "usage: kadpunch keygen [-o FILE] [--force]\n"
    "       kadpunch keygen --public [-o FILE]\n"
    "\n"
    "Creates a new ed25519 key pair, writes it to FILE with mode 0600, and prints\n"
    "the public key: the 52-character name other peers use to find and reach\n"
    "this one. FILE defaults to $KADPUNCH_KEY, else ~/.kadpunch/key (its folder\n"
    "is created 0700). An existing file is never replaced without --force.\n"
    "With --public nothing is made: the public key of the existing FILE is\n"
    "printed (what to give the peers that should let this one in).\n"
    "\n"
    "examples:\n"
    "  kadpunch keygen                      # ~/.kadpunch/key\n"
    "  kadpunch keygen -o /etc/kadpunch/key\n"
    "  kadpunch keygen --public -o /var/lib/kadpunch/key\n"
    "\n"
    "exit codes: 0 written (--public: printed), 1 the file could not be written,\n"
    "2 bad options, or (--public) no readable key file\n";

/* --public: the public key of an existing key file. */
static int print_public(const char *path) {
  kp_keypair_t kp;
  int rc = kp_cli_load_key(path, &kp, "keygen");
  if (rc) return rc;
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, text);
  kp_keypair_wipe(&kp);
  printf("%s\n", text);
  return KP_EXIT_OK;
}

int kp_cli_keygen(int argc, char **argv) {
  static const struct option longopts[] = {{"output", required_argument, 0, 'o'},
                                           {"force", no_argument, 0, 'f'},
                                           {"public", no_argument, 0, 'p'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *path = NULL;
  bool force = false, public_only = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
    switch (c) {
      case 'o': path = optarg; break;
      case 'f': force = true; break;
      case 'p': public_only = true; break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("keygen", "unknown option");
    }
  }
  if (optind < argc) return kp_cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
  if (public_only && force)
    return kp_cli_usage_error("keygen", "--public writes nothing: no --force");
  if (public_only) return print_public(path ? path : kp_cli_default_key_path());
  if (!path) {
    path = kp_cli_default_key_path();
    /* The default folder is ours to create; an explicit path's is not. */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
      *slash = '\0';
      if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "kadpunch keygen: cannot create %s: %s\n", dir, strerror(errno));
        return KP_EXIT_FAIL;
      }
    }
  }
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  int err = kp_key_file_write(path, &kp, force);
  if (err) {
    if (err == UV_EEXIST)
      fprintf(stderr, "kadpunch keygen: %s exists; not replacing it (use --force)\n", path);
    else
      fprintf(stderr, "kadpunch keygen: cannot write %s: %s\n", path, kp_strerror(err));
    kp_keypair_wipe(&kp);
    return KP_EXIT_FAIL;
  }
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, text);
  kp_keypair_wipe(&kp);
  printf("%s\n", text);
  fprintf(stderr, "kadpunch keygen: wrote %s (mode 0600)\n", path);
  return KP_EXIT_OK;
}
