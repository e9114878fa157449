# Installs what a server deployment needs beside the program (run by `cmake --install`, so the
# paths follow the install-time prefix: `make install` -> /usr/local, the Debian package -> /usr):
#   <prefix>/lib/systemd/system/jvdb.service   the unit, its paths filled in for this prefix
#   <prefix>/lib/sysusers.d/jvdb.conf          the jvdb system user
#   <sysconfdir>/jvdb/jvdb.json                 a sample config, never overwriting an existing one
#   <prefix>/share/doc/jvdb/                    DEPLOY.md, API.md, CLI.md and the Grafana dashboard
# JVDB_SOURCE_DIR is set by the install(CODE) line in CMakeLists.txt.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(JVDB_SYSCONFDIR "/etc")     # the FHS place for a system package's configuration
else()
  set(JVDB_SYSCONFDIR "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(JVDB_BINDIR "${CMAKE_INSTALL_PREFIX}/bin")
set(JVDB_DOCDIR "${CMAKE_INSTALL_PREFIX}/share/doc/jvdb")
set(root "$ENV{DESTDIR}")   # file(INSTALL) adds it itself; configure_file and EXISTS do not

set(unit "${root}${CMAKE_INSTALL_PREFIX}/lib/systemd/system/jvdb.service")
configure_file("${JVDB_SOURCE_DIR}/packaging/jvdb.service.in" "${unit}" @ONLY)
message(STATUS "Installing: ${unit}")

file(INSTALL "${JVDB_SOURCE_DIR}/packaging/jvdb.sysusers" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/sysusers.d"
     RENAME jvdb.conf)

set(conf "${root}${JVDB_SYSCONFDIR}/jvdb/jvdb.json")
if(EXISTS "${conf}")
  message(STATUS "Keeping: ${conf} (an existing configuration is never overwritten)")
else()
  file(INSTALL "${JVDB_SOURCE_DIR}/packaging/jvdb.json" DESTINATION "${JVDB_SYSCONFDIR}/jvdb")
endif()

file(INSTALL "${JVDB_SOURCE_DIR}/docs/DEPLOY.md" "${JVDB_SOURCE_DIR}/docs/API.md" "${JVDB_SOURCE_DIR}/docs/CLI.md"
             "${JVDB_SOURCE_DIR}/packaging/grafana-dashboard.json"
     DESTINATION "${JVDB_DOCDIR}")
