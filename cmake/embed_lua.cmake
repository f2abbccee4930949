# Turns the Lua file IN into C source OUT defining ar__lua_<NAME> (bytes)
# and ar__lua_<NAME>_len: Lua helpers embedded in the binary.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from ${IN} by cmake/embed.cmake. */\n#include <stddef.h>\n"
  "extern const char ar__lua_${NAME}[];\nextern const size_t ar__lua_${NAME}_len;\n"
  "const char ar__lua_${NAME}[] = {\n${bytes}0};\nconst size_t ar__lua_${NAME}_len = ${len};\n")
