/* expect.h: the check of the test programs. EXPECT(cond, fmt, ...) counts a failure of the running
 * test in cur_failed (which the including file defines and resets per test) and prints file:line
 * and the message for the first 8 failures of that test. */
#ifndef REFIT_TESTS_EXPECT_H
#define REFIT_TESTS_EXPECT_H

#include <stdio.h>

#define EXPECT(cond, ...)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      if (cur_failed++ < 8) {                              \
        printf("  %s:%d: ", __FILE__, __LINE__);           \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
      }                                                    \
    }                                                      \
  } while (0)

#endif
