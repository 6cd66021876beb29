// The built-in sha256 (used where OpenSSL's libcrypto is not found), compiled without OpenSSL
// whatever the build found, against the standard's test vectors.
#include "sha256_vectors.hpp"

int main() {
  check_sha256_vectors();
  return failures() ? 1 : 0;
}
