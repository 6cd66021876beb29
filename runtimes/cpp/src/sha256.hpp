// sha256 of a file, as lowercase hex: OpenSSL's libcrypto where CMake found it, else built in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgecompress {

std::string sha256_file(const std::string& path);  // throws Error when the file cannot be read
std::string sha256_hex(const void* data, size_t size);

}  // namespace edgecompress
