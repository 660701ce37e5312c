# SPDX-License-Identifier: MIT
# libkadpunch as others use it: one shared library (SONAME libkadpunch.so.0,
# exporting only the KP_EXTERN API of kadpunch.h) and one static archive,
# each folding in the internal archives; the headers, kadpunch.pc, a CMake
# package (find_package(kadpunch) -> kadpunch::kadpunch), the programs, the
# systemd unit, the docs; and Debian packages through CPack.
include(GNUInstallDirs)

# Every internal archive, in link order (the node layer first).
set(KP_INTERNAL_LIBS kp_node kp_proxy kp_holepunch kp_relay_uv kp_relay kp_stream_uv kp_stream kp_dht
                     kp_common_uv kp_common)

# The system libraries the archives use; the shared library links them, the
# static one names them in kadpunch.pc.
set(kp_system_libs PkgConfig::LIBUV PkgConfig::SODIUM PkgConfig::MSGPACK kp_natpmp PkgConfig::MINIUPNPC m)
if(LIBCRYPTO_FOUND)
  list(APPEND kp_system_libs PkgConfig::LIBCRYPTO)
endif()

# Both are made of the internal archives' objects.
set(kp_objects)
foreach(lib ${KP_INTERNAL_LIBS})
  list(APPEND kp_objects $<TARGET_OBJECTS:${lib}>)
endforeach()

add_library(kadpunch_shared SHARED ${kp_objects})
target_link_libraries(kadpunch_shared PRIVATE ${kp_system_libs})
target_link_libraries(kadpunch_shared INTERFACE PkgConfig::LIBUV)
# Every symbol resolved at link time (sanitizer runtimes come with the
# program, so instrumented builds leave theirs open).
if(NOT KP_SANITIZE AND NOT KP_FUZZ)
  target_link_options(kadpunch_shared PRIVATE -Wl,--no-undefined)
endif()
set_target_properties(kadpunch_shared PROPERTIES
  LINKER_LANGUAGE C
  OUTPUT_NAME kadpunch
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  EXPORT_NAME kadpunch)
target_include_directories(kadpunch_shared INTERFACE
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

add_library(kadpunch_static STATIC ${kp_objects})
set_target_properties(kadpunch_static PROPERTIES OUTPUT_NAME kadpunch LINKER_LANGUAGE C)

# kadpunch.pc: kadpunch.h includes uv.h, so libuv is a public requirement.
# Paths are relative to the file, so an installed tree can move.
file(RELATIVE_PATH KP_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" KP_PC_TO_PREFIX "${KP_PC_TO_PREFIX}")
set(KP_PC_REQUIRES_PRIVATE "libsodium, ${KP_MSGPACK_PC}, miniupnpc")
if(LIBCRYPTO_FOUND)
  string(APPEND KP_PC_REQUIRES_PRIVATE ", libcrypto")
endif()
configure_file(cmake/kadpunch.pc.in ${CMAKE_BINARY_DIR}/kadpunch.pc @ONLY)

install(TARGETS kadpunch_shared EXPORT kadpunchTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev)
install(TARGETS kadpunch_static ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(FILES include/kadpunch.h include/kadpunch_base.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(FILES ${CMAKE_BINARY_DIR}/kadpunch.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
install(EXPORT kadpunchTargets NAMESPACE kadpunch::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kadpunch COMPONENT dev)
include(CMakePackageConfigHelpers)
configure_package_config_file(cmake/kadpunchConfig.cmake.in
  ${CMAKE_BINARY_DIR}/kadpunchConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kadpunch)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/kadpunchConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/kadpunchConfig.cmake ${CMAKE_BINARY_DIR}/kadpunchConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kadpunch COMPONENT dev)

install(TARGETS kadpunch kadpunch-inspect RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT bin)
# The systemd unit names the program where this install puts it (the
# prefix is known only at install time: cpack installs into /usr).
install(CODE "
  file(READ \"${PROJECT_SOURCE_DIR}/contrib/kadpunch.service\" unit)
  string(REPLACE \"/usr/local/bin/kadpunch\" \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/kadpunch\"
         unit \"\${unit}\")
  file(WRITE \"${CMAKE_BINARY_DIR}/kadpunch.service\" \"\${unit}\")" COMPONENT bin)
install(FILES ${CMAKE_BINARY_DIR}/kadpunch.service DESTINATION lib/systemd/system COMPONENT bin)
install(FILES contrib/kadpunch.conf DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT bin)
install(FILES README.md LICENSE docs/architecture.md docs/protocol.md docs/daemon.md docs/inspect.md
              docs/benchmarks.md docs/nat-lab.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT bin)
install(DIRECTORY examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT dev)

include(cmake/KpPackage.cmake)
