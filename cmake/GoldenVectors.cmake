# The golden vectors are stored xz-compressed, one tar.xz per case (tests/data/golden/<case>.tar.xz holding
# <case>.safetensors: their random floats shrink by ~45%, which keeps the repository small enough to travel
# with a training corpus). The C++ suites and the CLI tests read them decompressed from the build tree,
# extracted here at configure time by CMake itself (no xz program needed); LIGHTHOUSE_GOLDEN_DIR names that
# folder. The Python suite reads the archives directly (tests/python/conftest.py).
set(_golden_source ${PROJECT_SOURCE_DIR}/tests/data/golden)
set(LIGHTHOUSE_GOLDEN_DIR ${PROJECT_BINARY_DIR}/golden)
file(MAKE_DIRECTORY ${LIGHTHOUSE_GOLDEN_DIR})
configure_file(${_golden_source}/manifest.json ${LIGHTHOUSE_GOLDEN_DIR}/manifest.json COPYONLY)
file(GLOB _golden_archives CONFIGURE_DEPENDS ${_golden_source}/*.tar.xz)
foreach(_archive ${_golden_archives})
  get_filename_component(_name ${_archive} NAME)
  string(REGEX REPLACE "\\.tar\\.xz$" ".safetensors" _name ${_name})
  # A changed archive configures again and is extracted again.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_archive})
  if(NOT EXISTS ${LIGHTHOUSE_GOLDEN_DIR}/${_name} OR ${_archive} IS_NEWER_THAN ${LIGHTHOUSE_GOLDEN_DIR}/${_name})
    file(ARCHIVE_EXTRACT INPUT ${_archive} DESTINATION ${LIGHTHOUSE_GOLDEN_DIR} PATTERNS ${_name} TOUCH)
    if(NOT EXISTS ${LIGHTHOUSE_GOLDEN_DIR}/${_name})
      message(FATAL_ERROR "${_archive} does not hold ${_name}")
    endif()
  endif()
endforeach()
