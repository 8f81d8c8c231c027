# gen_stubs.cmake - writes weak definitions for every function an NVIDIA library exports, so that the
# simulated library exports the same names. Each stub logs once that the call is not supported and returns
# the library's "not supported" code; a real implementation elsewhere in the library (a strong definition)
# takes precedence at link time.
# Run as a script: cmake -DLIST=exports.txt -DOUTPUT=stubs.c -DPREFIX=cuda -P gen_stubs.cmake
# (gp_<PREFIX>_unsupported, written by hand in the library, logs and picks the return code)
file(STRINGS "${LIST}" names REGEX "^[A-Za-z_][A-Za-z0-9_]*$")
set(out "/* Generated from ${LIST} by cmake/gen_stubs.cmake; do not edit. */\n")
string(APPEND out "#include <stdatomic.h>\n")
string(APPEND out "int gp_${PREFIX}_unsupported(const char *name, atomic_int *once);\n")
string(APPEND out "#define GP_STUB(n) \\\n")
string(APPEND out "    __attribute__((weak, visibility(\"default\"))) int n(void); \\\n")
string(APPEND out "    __attribute__((weak, visibility(\"default\"))) int n(void) \\\n")
string(APPEND out "    { \\\n        static atomic_int once; \\\n        return gp_${PREFIX}_unsupported(#n, &once); \\\n    }\n")
foreach(n IN LISTS names)
    string(APPEND out "GP_STUB(${n})\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "${out}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
