# Turns each broker/lua/NAME.lua into a C string in one generated file:
#   const char celer_lua_NAME[] = "...";
# Invoked as: cmake -DOUT=file.c -DSCRIPTS="a.lua|b.lua" -P embed_lua.cmake
string(REPLACE "|" ";" SCRIPTS "${SCRIPTS}")
set(body "/* Generated from the files of broker/lua/ at build time. Do not edit. */\n")
foreach(path ${SCRIPTS})
  get_filename_component(name ${path} NAME_WE)
  file(READ ${path} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND body "const char celer_lua_${name}[] = {${hex}0x00};\n")
endforeach()
file(WRITE ${OUT}.tmp "${body}")
file(RENAME ${OUT}.tmp ${OUT})
