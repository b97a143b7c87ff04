# The CMake package of an installed Lighthouse: find_package(lighthouse)
# gives lighthouse::core (headers, the static library and, when it was built
# with CUDA, the kernels and their CUDA runtime dependency).
include(CMakePackageConfigHelpers)

set(LIGHTHOUSE_PACKAGE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lighthouse)
install(EXPORT lighthouseTargets NAMESPACE lighthouse:: DESTINATION ${LIGHTHOUSE_PACKAGE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/lighthouseConfig.cmake.in
  ${PROJECT_BINARY_DIR}/lighthouseConfig.cmake INSTALL_DESTINATION ${LIGHTHOUSE_PACKAGE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lighthouseConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lighthouseConfig.cmake ${PROJECT_BINARY_DIR}/lighthouseConfigVersion.cmake
  DESTINATION ${LIGHTHOUSE_PACKAGE_DIR})
