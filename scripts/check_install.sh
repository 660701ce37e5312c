#!/bin/sh
# SPDX-License-Identifier: MIT
# kadpunch as a user installs it (CI, as root): builds the Debian packages
# in a build directory, installs them, runs `kadpunch --version`, builds
# examples/echo.c against the installed library through pkg-config and
# through CMake's find_package, runs both (a connect by key and an echo on
# loopback), and removes the packages again.
#
#   scripts/check_install.sh [BUILD_DIR]      (default: build)
set -eu
cd "$(dirname "$0")/.."
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d)
installed=""
cleanup() {
  [ -n "$installed" ] && apt-get purge -y -qq kadpunch libkadpunch-dev libkadpunch0 >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

version=$(sed -n 's/^project(kadpunch VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
(cd "$build" && cpack -G DEB -B "$work/debs" >/dev/null)
for deb in "$work"/debs/*.deb; do
  echo "  $(basename "$deb"): depends on $(dpkg-deb -f "$deb" Depends)"
done
installed=yes
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$work"/debs/*.deb >/dev/null

got=$(/usr/bin/kadpunch --version)
[ "$got" = "kadpunch $version" ] || { echo "kadpunch --version says '$got', not 'kadpunch $version'" >&2; exit 1; }
echo "  /usr/bin/kadpunch --version: $got"

# The example against the installed copy only: no include path or library
# of the source tree is visible to these builds.
cc -Wall -Wextra -Werror -o "$work/echo-pc" examples/echo.c $(pkg-config --cflags --libs kadpunch)
"$work/echo-pc" >"$work/out" || { cat "$work/out"; exit 1; }
sed 's/^/  pkg-config build: /' "$work/out"
cmake -S examples -B "$work/echo-cmake" -G Ninja >/dev/null
cmake --build "$work/echo-cmake" >/dev/null
"$work/echo-cmake/echo" >"$work/out" || { cat "$work/out"; exit 1; }
sed 's/^/  find_package build: /' "$work/out"
ldd "$work/echo-cmake/echo" | grep -Eq "libkadpunch.so.0 => (/usr)?/lib/" ||
  { echo "the example did not link the installed libkadpunch.so.0" >&2; exit 1; }
echo "install check passed"
