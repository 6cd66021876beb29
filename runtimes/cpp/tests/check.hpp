// A minimal test harness for the ctest unit tests: CHECK records a failure and goes on;
// main returns the failure count.
#pragma once

#include <iostream>
#include <string>

inline int& failures() {
  static int count = 0;
  return count;
}

#define CHECK(condition)                                                                  \
  do {                                                                                    \
    if (!(condition)) {                                                                   \
      ++failures();                                                                       \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #condition << "\n"; \
    }                                                                                     \
  } while (0)

// The code under test throws edgecompress::Error whose message contains `fragment`.
#define CHECK_ERROR(expression, fragment)                                                           \
  do {                                                                                              \
    try {                                                                                           \
      (void)(expression);                                                                           \
      ++failures();                                                                                 \
      std::cerr << __FILE__ << ":" << __LINE__ << ": no error from " #expression "\n";              \
    } catch (const edgecompress::Error& err) {                                                      \
      if (std::string(err.what()).find(fragment) == std::string::npos) {                           \
        ++failures();                                                                               \
        std::cerr << __FILE__ << ":" << __LINE__ << ": unexpected message: " << err.what() << "\n"; \
      }                                                                                             \
    }                                                                                               \
  } while (0)
