// cpp-httplib as Debian ships it (libcpp-httplib-dev 0.11): a header plus a compiled library
// (-lcpp-httplib) built with OpenSSL, zlib and Brotli support. Those macros change class
// layouts, so every file that includes httplib.h must see the same ones the library saw:
// include this header instead of <httplib.h>.
//
// The library's limits are compiled in as well: defining CPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH
// (8 KiB bodies for application/x-www-form-urlencoded) or similar macros here changes nothing,
// since Server::read_content lives in the .so. The server reads its JSON bodies itself instead
// (server.cpp: read_body).
#pragma once
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_OPENSSL_SUPPORT
#endif
#ifndef CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#endif
#ifndef CPPHTTPLIB_BROTLI_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#endif
#include <httplib.h>
