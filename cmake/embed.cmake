# embed.cmake - turns a data file into a C source defining
#   const char <SYMBOL>[] (NUL-terminated) and const size_t <SYMBOL>_len.
# Run as a script:  cmake -DINPUT=... -DOUTPUT=... -DSYMBOL=... -P embed.cmake
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
    "/* Generated from ${INPUT} by cmake/embed.cmake; do not edit. */\n"
    "#include <stddef.h>\n"
    "extern const char ${SYMBOL}[];\n"
    "extern const size_t ${SYMBOL}_len;\n"
    "__attribute__((visibility(\"hidden\"))) const char ${SYMBOL}[] = {\n${bytes}0x00};\n"
    "__attribute__((visibility(\"hidden\"))) const size_t ${SYMBOL}_len = ${len};\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
