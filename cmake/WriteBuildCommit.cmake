# cmake -DSOURCE_DIR=... -DOUTPUT=... -P WriteBuildCommit.cmake
# Writes the commit of SOURCE_DIR to OUTPUT, touching it only on change: git's
# HEAD when SOURCE_DIR is the top of a git checkout (not a folder inside
# another project's checkout), with "+uncommitted" appended when tracked files
# differ from it (results then do not pass for the commit's), else
# $LIGHTHOUSE_COMMIT of the build, else nothing (an empty file).
set(commit "")
execute_process(
  COMMAND git -C ${SOURCE_DIR} rev-parse --show-toplevel
  OUTPUT_VARIABLE top
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE status
  ERROR_QUIET)
if(status EQUAL 0)
  file(REAL_PATH "${top}" top)
  file(REAL_PATH "${SOURCE_DIR}" source)
  if(top STREQUAL source)
    execute_process(
      COMMAND git -C ${SOURCE_DIR} rev-parse --verify -q HEAD
      OUTPUT_VARIABLE commit
      OUTPUT_STRIP_TRAILING_WHITESPACE
      ERROR_QUIET)
    execute_process(
      COMMAND git -C ${SOURCE_DIR} diff --quiet HEAD --
      RESULT_VARIABLE changed
      ERROR_QUIET)
    if(NOT commit STREQUAL "" AND NOT changed EQUAL 0)
      string(APPEND commit "+uncommitted")
    endif()
  endif()
endif()
if(commit STREQUAL "")
  set(commit "$ENV{LIGHTHOUSE_COMMIT}")
endif()
file(CONFIGURE OUTPUT ${OUTPUT} CONTENT "${commit}\n")
