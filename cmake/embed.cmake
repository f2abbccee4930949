# cmake -DIN=file -DOUT=header -DNAME=symbol -P embed.cmake: writes a C
# header defining `static const unsigned char NAME[]` with IN's bytes.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from ${IN} by cmake/embed.cmake. */\nstatic const unsigned char ${NAME}[] = {\n${bytes}};\n")
