# The source commit the op library is built from, written at every build next
# to the library (and installed with it into the Python package), where the
# benchmark's environment record reads it. Asking git at run time would find
# whatever checkout the package happens to be installed in.
set(LIGHTHOUSE_COMMIT_FILE ${PROJECT_BINARY_DIR}/src/torch/_build_commit.txt)
add_custom_target(lighthouse_build_commit
  COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DOUTPUT=${LIGHTHOUSE_COMMIT_FILE}
          -P ${CMAKE_CURRENT_LIST_DIR}/WriteBuildCommit.cmake
  BYPRODUCTS ${LIGHTHOUSE_COMMIT_FILE}
  COMMENT "Recording the source commit"
  VERBATIM)
add_dependencies(lighthouse_torch lighthouse_build_commit)
install(FILES ${LIGHTHOUSE_COMMIT_FILE} DESTINATION lighthouse)
