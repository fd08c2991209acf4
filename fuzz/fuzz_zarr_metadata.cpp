// libFuzzer target: Zarr v2 and v3 array metadata. Any input must parse or give a qlty::Error; what parses must
// write back and parse again to the same metadata.
#include <qlty/zarr/metadata.hpp>

#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (int v : {2, 3}) {
    try {
      const auto m = v == 2 ? qlty::detail::parse_v2(text, "fuzz") : qlty::detail::parse_v3(text, "fuzz");
      const std::string again = qlty::detail::dump_metadata(m);
      const auto m2 = v == 2 ? qlty::detail::parse_v2(again, "again") : qlty::detail::parse_v3(again, "again");
      if (m2.shape != m.shape || m2.chunks != m.chunks || m2.dtype != m.dtype || m2.codecs != m.codecs ||
          m2.chunk_key(m.grid().data()) != m.chunk_key(m.grid().data()))
        std::abort();  // a round trip that changes the metadata
    } catch (const qlty::Error&) {
    } catch (const c10::Error&) {
    }
  }
  return 0;
}
