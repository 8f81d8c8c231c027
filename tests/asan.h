/* asan.h - GP_ASAN: 1 when the tests are built with AddressSanitizer (gcc defines __SANITIZE_ADDRESS__, clang
 * answers __has_feature). Instrumented programs launch several times slower, which some tests allow for. */
#ifndef GP_TESTS_ASAN_H
#define GP_TESTS_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define GP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GP_ASAN 1
#endif
#endif
#ifndef GP_ASAN
#define GP_ASAN 0
#endif

#endif
