#pragma once
// Checksums and their text forms, shared by the Zarr crc32c codec, the checkpoint journal, the carry files,
// fingerprints and the program's model identity.

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace qlty::detail {

// ---- CRC32C (Castagnoli). No Debian package provides it: SSE4.2 instructions where the CPU has them, else a
// table. Polynomial 0x82F63B78 (reflected), initial and final xor 0xFFFFFFFF, as in the v3 crc32c codec.
inline const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) inline uint32_t crc32c_sse42(uint32_t c, const uint8_t* p, size_t n) {
  uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
  }
  c = static_cast<uint32_t>(c64);
  for (; n > 0; --n, ++p) c = __builtin_ia32_crc32qi(c, *p);
  return c;
}
#endif

inline uint32_t crc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return crc32c_sse42(c, p, n) ^ 0xFFFFFFFFu;
#endif
  const auto& t = crc32c_table();
  for (size_t i = 0; i < n; ++i) c = t[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/// Eight lowercase hex digits.
inline std::string hex32(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

/// Sixteen lowercase hex digits.
inline std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

/// FNV-1a (64 bits) of n bytes, starting from `basis` (FNV's offset basis unless given).
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t basis = 14695981039346656037ull) {
  uint64_t h = basis;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace qlty::detail
