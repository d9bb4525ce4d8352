# SPDX-License-Identifier: MIT
# Install baton into a temporary prefix, then build a program outside the
# tree against it twice: with find_package(baton) (shared and static
# targets) and with pkg-config.  Run as:
#   cmake -DBUILD_DIR=.. -DSOURCE_DIR=.. -DWORK_DIR=.. -DCC=.. -DSAN_FLAGS=.. -P install_consumer.cmake
foreach(v BUILD_DIR SOURCE_DIR WORK_DIR CC)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "install_consumer.cmake: ${v} is not set")
  endif()
endforeach()
string(REPLACE ";" " " SAN_FLAGS "${SAN_FLAGS}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "ok: ${ARGN}")
  set(LAST_OUT "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f include/baton/wire.h include/baton/fdpass.h include/baton/version.h include/baton/log.h)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()

# 1. CMake package.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/cmake-build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${CC}
    "-DCMAKE_C_FLAGS=${SAN_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${SAN_FLAGS}")
run(${CMAKE_COMMAND} --build ${WORK_DIR}/cmake-build)
run(${WORK_DIR}/cmake-build/consumer_shared)
run(${WORK_DIR}/cmake-build/consumer_static)

# 2. pkg-config.
file(GLOB_RECURSE pcfiles ${prefix}/*/baton.pc)
list(GET pcfiles 0 pc)
get_filename_component(pcdir ${pc} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
run(pkg-config --cflags --libs baton)
string(STRIP "${LAST_OUT}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
separate_arguments(san UNIX_COMMAND "${SAN_FLAGS}")
run(pkg-config --variable=libdir baton)
string(STRIP "${LAST_OUT}" libdir)
run(${CC} ${san} ${SOURCE_DIR}/tests/consumer/main.c -o ${WORK_DIR}/consumer_pc ${flags} -Wl,-rpath,${libdir})
run(${WORK_DIR}/consumer_pc)
message(STATUS "installed baton works with find_package and pkg-config")
