#pragma once
// Reading JSON files qlty did not necessarily write (Zarr metadata, NGFF attributes, run manifests): parsing with a
// nesting limit and typed accessors whose errors name the file and the key. Every defect is an Error tagged
// `zarr.format`, the tag of "a file that is not valid" (named when Zarr metadata were the only such files).

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace qlty::detail {

using nlohmann::json;

[[noreturn]] inline void bad_meta(const std::string& file, const std::string& what) {
  throw Error("zarr.format", file + ": " + what);
}

/// Nesting accepted in metadata files: far above what any Zarr or NGFF document needs, far below what recursion
/// over the parsed value (printing, comparing, destroying) could not handle.
constexpr int kMaxJsonDepth = 64;

inline json parse_json(const std::string& text, const std::string& file) {
  struct TooDeep {};
  try {
    return json::parse(text, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      return true;
    });
  } catch (const TooDeep&) {
    bad_meta(file, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  } catch (const json::exception& e) {
    bad_meta(file, std::string("invalid JSON: ") + e.what());
  }
}

/// A JSON value for a message: compact, at most `max` characters (values from files can be large).
inline std::string brief(const json& v, size_t max = 120) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > max) s = s.substr(0, max) + "... (" + std::to_string(s.size()) + " characters)";
  return s;
}

inline const json& key(const json& j, const char* k, const std::string& file) {
  if (!j.is_object()) bad_meta(file, "expected a JSON object, got " + std::string(j.type_name()));
  const auto it = j.find(k);
  if (it == j.end()) bad_meta(file, std::string("missing key \"") + k + "\"");
  return *it;
}

inline int64_t as_int(const json& v, const std::string& what, const std::string& file) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad_meta(file, what + " is too large: " + brief(v));
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  bad_meta(file, what + " must be an integer, got " + brief(v));
}

inline std::string as_string(const json& v, const std::string& what, const std::string& file) {
  if (!v.is_string()) bad_meta(file, what + " must be a string, got " + brief(v));
  return v.get<std::string>();
}

inline std::vector<int64_t> int_list(const json& v, const std::string& what, const std::string& file) {
  if (!v.is_array()) bad_meta(file, what + " must be a list of integers, got " + brief(v));
  std::vector<int64_t> out;
  for (const auto& e : v) out.push_back(as_int(e, what + " entry", file));
  return out;
}

/// The JSON document in `path` (at most `max_bytes`), or nullopt when there is no such file.
inline std::optional<json> read_json_file(const std::string& path, uint64_t max_bytes, const char* what = "file") {
  auto bytes = read_file(path, max_bytes, what);
  if (!bytes) return std::nullopt;
  return parse_json(std::string(bytes->begin(), bytes->end()), path);
}

}  // namespace qlty::detail
