# SPDX-License-Identifier: MIT
# Debian packages: `cpack -G DEB` in a build directory makes
#   kadpunch          the programs, the systemd unit, the docs
#   libkadpunch0      the shared library
#   libkadpunch-dev   headers, static library, kadpunch.pc, the CMake package
# with their library dependencies found by dpkg-shlibdeps (libuv1,
# libsodium23, libmsgpackc2 or its successor, libssl3, libnatpmp1, libminiupnpc17).
set(CPACK_PACKAGE_NAME kadpunch)
set(CPACK_PACKAGE_VENDOR "kadpunch")
set(CPACK_PACKAGE_CONTACT "kadpunch maintainers <maintainers@kadpunch.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "peer-to-peer connectivity by public key")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL bin lib dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

set(CPACK_DEBIAN_BIN_PACKAGE_NAME kadpunch)
set(CPACK_DEBIAN_BIN_DESCRIPTION
  "peer-to-peer connectivity by public key: node, daemon and DHT inspector\n Reach a machine behind NAT by its ed25519 key: kadpunch finds it on a\n Kademlia DHT, punches a direct encrypted UDP path (or relays), and\n forwards TCP services over it. kadpunch-inspect looks into the DHT.")
set(CPACK_DEBIAN_LIB_PACKAGE_NAME libkadpunch0)
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIB_DESCRIPTION
  "peer-to-peer connectivity by public key (shared library)\n A Kademlia DHT, NAT hole punching, blind relays and encrypted streams\n on libuv.")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libkadpunch-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libuv1-dev (>= 1.44), libsodium-dev, libmsgpack-dev | libmsgpack-c-dev, libnatpmp-dev, libminiupnpc-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION
  "peer-to-peer connectivity by public key (development files)\n Headers, the static library, pkg-config and CMake files.")
set(CPACK_COMPONENT_DEV_DEPENDS lib) # libkadpunch0 (= version)
include(CPack)
