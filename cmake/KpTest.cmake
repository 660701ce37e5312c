# SPDX-License-Identifier: MIT
# kp_test_binary(NAME SOURCES files... LIBS libs...)
#
# Builds one test binary and registers every case it declares as its own ctest
# entry. Cases are declared in the C sources as KP_CASE(name, label, timeout)
# inside the binary's case table, so the table in C is the single source of
# truth: this function reads it at configure time and re-reads it whenever the
# source changes.
function(kp_test_binary name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE kp_test_harness ${T_LIBS})
  string(REGEX REPLACE "^test_" "" prefix ${name})
  set(registered 0)
  foreach(src ${T_SOURCES})
    get_filename_component(path ${src} ABSOLUTE)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${path})
    file(READ ${path} text)
    string(REGEX MATCHALL "KP_CASE\\([^)]*\\)" calls "${text}")
    foreach(call ${calls})
      if(call MATCHES "^KP_CASE\\(([A-Za-z0-9_]+), *([a-z]+), *([0-9]+)\\)$")
        set(case ${CMAKE_MATCH_1})
        math(EXPR registered "${registered} + 1")
        add_test(NAME ${prefix}.${case} COMMAND ${name} ${case})
        set_tests_properties(${prefix}.${case} PROPERTIES
          LABELS ${CMAKE_MATCH_2} TIMEOUT ${CMAKE_MATCH_3} SKIP_RETURN_CODE 77
          # The programs under test read no configuration file of this
          # machine's (~/.config/kadpunch/config, /etc/kadpunch/config).
          ENVIRONMENT "KADPUNCH_CONFIG=/dev/null")
      else()
        message(FATAL_ERROR "${src}: cannot parse test case: ${call}")
      endif()
    endforeach()
  endforeach()
  # Every case in the binary's table must have been registered above.
  add_test(NAME ${prefix}.all_cases_registered
    COMMAND sh -c "test \"$($<TARGET_FILE:${name}> --list | wc -l)\" -eq ${registered}")
  set_tests_properties(${prefix}.all_cases_registered PROPERTIES LABELS unit TIMEOUT 10)
endfunction()
