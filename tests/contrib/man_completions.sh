#!/bin/sh
# SPDX-License-Identifier: MIT
# The man pages and shell completions in contrib/ stay true to the
# programs: every command `kadpunch --help` and `kadpunch-inspect --help`
# list is in kadpunch(1) / kadpunch-inspect(1) and in the bash, zsh and
# fish completions; the pages format without a groff warning; the
# completion scripts parse (zsh and fish where installed); and bash's
# completes a command's options from its --help.
#   tests/contrib/man_completions.sh BUILD_DIR
set -eu
here="$(cd "$(dirname "$0")/../../contrib" && pwd)"
build="$(cd "$1" && pwd)"
kp="$build/node/kadpunch"
ki="$build/tools/inspect/kadpunch-inspect"
fail=0
say() { echo "$*"; fail=1; }

for page in "$here"/man/*.[15]; do
  warnings=$(groff -man -ww -z "$page" 2>&1 || true)
  [ -z "$warnings" ] || say "$page: $warnings"
done

commands() { "$1" --help | sed -n 's/^  \([a-z][a-z-]*\)  *.*/\1/p'; }
for c in $(commands "$kp"); do
  # (roff writes a hyphen as \-)
  grep -q "$(echo "$c" | sed 's/-/\\\\-/g')" "$here/man/kadpunch.1" || say "kadpunch.1 lacks $c"
  for f in kadpunch.bash _kadpunch kadpunch.fish; do
    grep -q -- "$c" "$here/completions/$f" || say "$f lacks kadpunch $c"
  done
done
for c in $(commands "$ki"); do
  grep -q "$(echo "$c" | sed 's/-/\\\\-/g')" "$here/man/kadpunch-inspect.1" || say "kadpunch-inspect.1 lacks $c"
  for f in kadpunch.bash _kadpunch kadpunch.fish; do
    grep -q -- "$c" "$here/completions/$f" || say "$f lacks kadpunch-inspect $c"
  done
done

bash -n "$here/completions/kadpunch.bash" || say "kadpunch.bash does not parse"
if command -v zsh >/dev/null 2>&1; then zsh -n "$here/completions/_kadpunch" || say "_kadpunch does not parse"
else echo "(no zsh: _kadpunch not parsed)"; fi
if command -v fish >/dev/null 2>&1; then fish --no-execute "$here/completions/kadpunch.fish" || say "kadpunch.fish does not parse"
else echo "(no fish: kadpunch.fish not parsed)"; fi

# bash: `kadpunch connect --li<TAB>` offers --listen and --listen-udp.
got=$(PATH="$build/node:$build/tools/inspect:$PATH" KADPUNCH_CONFIG=/dev/null bash -c '
  . "$1"
  COMP_WORDS=(kadpunch connect --li); COMP_CWORD=2; _kadpunch; echo "${COMPREPLY[*]}"
  COMP_WORDS=(kadpunch st); COMP_CWORD=1; _kadpunch; echo "${COMPREPLY[*]}"
  COMP_WORDS=(kadpunch-inspect stats --con); COMP_CWORD=2; _kadpunch_inspect; echo "${COMPREPLY[*]}"
' sh "$here/completions/kadpunch.bash")
echo "$got" | grep -q -- "--listen --listen-udp" || say "bash: connect --li gives: $got"
echo "$got" | grep -qx "status" || say "bash: st gives: $got"
echo "$got" | grep -qx -- "--control" || say "bash: kadpunch-inspect stats --con gives: $got"
[ "$fail" = 0 ] && echo "man pages and completions: every command, no warning"
exit "$fail"
