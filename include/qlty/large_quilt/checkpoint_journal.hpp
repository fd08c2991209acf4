#pragma once
// IWYU pragma: private, include <qlty/large_quilt.hpp>
// The journaled checkpoint of a disk-cached quilt's folder: many staged files renamed over their targets as one
// atomic step (a redo journal, as databases keep one, with the data written once, not twice).
//
// A checkpoint stages the new contents of every changed file as a hidden file next to its target; commit() then
// writes a journal naming every (target, staged) pair, with a checksum, renames each staged file over its target,
// and removes the journal. recover() finishes the renames of a complete journal (a staged file that is gone was
// renamed already: idempotent) and deletes staged files that no complete journal names, so after a crash the
// folder holds exactly the last committed checkpoint.

#include <qlty/error.hpp>
#include <qlty/support/byte_io.hpp>
#include <qlty/support/checksum.hpp>
#include <qlty/support/fs.hpp>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qlty::detail {

constexpr char kJournalMagic[8] = {'Q', 'L', 'T', 'Y', 'J', 'R', 'N', '1'};

/// (target, staged) pairs, relative to the journal's folder.
using Renames = std::vector<std::pair<std::string, std::string>>;

/// A journal: (relative path, bytes) entries, then a CRC32C of everything before it.
inline std::vector<uint8_t> journal_encode(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  std::vector<uint8_t> b(kJournalMagic, kJournalMagic + 8);
  append_le64(b, entries.size());
  for (const auto& [name, bytes] : entries) {
    append_le64(b, name.size());
    b.insert(b.end(), name.begin(), name.end());
    append_le64(b, bytes.size());
    b.insert(b.end(), bytes.begin(), bytes.end());
  }
  const uint32_t crc = crc32c(b.data(), b.size());
  append_le32(b, crc);
  return b;
}

/// The entries of a complete journal, or nullopt for an incomplete or damaged one.
inline std::optional<std::vector<std::pair<std::string, std::vector<uint8_t>>>> journal_decode(
    const std::vector<uint8_t>& b) {
  if (b.size() < 20 || std::memcmp(b.data(), kJournalMagic, 8) != 0) return std::nullopt;
  if (crc32c(b.data(), b.size() - 4) != get_le32(b.data() + b.size() - 4)) return std::nullopt;
  const size_t end = b.size() - 4;
  size_t p = 8;
  const uint64_t n = get_le64(b.data() + p);
  p += 8;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> out;
  for (uint64_t i = 0; i < n; ++i) {
    if (p + 8 > end) return std::nullopt;
    const uint64_t ln = get_le64(b.data() + p);
    p += 8;
    if (ln > end - p) return std::nullopt;
    std::string name(reinterpret_cast<const char*>(b.data() + p), ln);
    p += ln;
    if (p + 8 > end) return std::nullopt;
    const uint64_t lb = get_le64(b.data() + p);
    p += 8;
    if (lb > end - p) return std::nullopt;
    out.emplace_back(std::move(name), std::vector<uint8_t>(b.begin() + p, b.begin() + p + lb));
    p += lb;
  }
  if (p != end || n > (1u << 30)) return std::nullopt;
  return out;
}

/// The journal of one folder. Targets are `top` files of the folder itself (e.g. "stitched") or chunk keys inside
/// one of `subfolders`; anything else in a journal is refused, so a crafted journal renames nothing.
class CheckpointJournal {
 public:
  CheckpointJournal(std::string folder, std::vector<std::string> top, std::vector<std::string> subfolders, bool durable)
      : folder_(std::move(folder)), top_(std::move(top)), subfolders_(std::move(subfolders)), durable_(durable) {}

  /// A staged name for `target` (relative), next to it: hidden, unique to this process and `seq`.
  static std::string staged_name(const std::string& target, uint64_t seq) {
    const auto slash = target.rfind('/');
    const std::string dir = slash == std::string::npos ? std::string() : target.substr(0, slash + 1);
    const std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
    return dir + "." + base + ".ckpt." + std::to_string(::getpid()) + "." + std::to_string(seq) + ".tmp";
  }

  std::string path(const std::string& rel = "") const { return rel.empty() ? folder_ : join_path(folder_, rel); }

  /// Makes the staged files the folder's contents, atomically: flush them (durable), write the journal, rename.
  /// On a failure before the journal is complete, the staged files of `fresh` (those staged for this commit) are
  /// removed and the folder keeps its last checkpoint.
  void commit(const Renames& renames, size_t fresh) {
    try {
      if (durable_) sync_folder(folder_, true);
      std::vector<std::pair<std::string, std::vector<uint8_t>>> entries;
      entries.reserve(renames.size());
      for (const auto& [target, staged] : renames)
        entries.emplace_back(target, std::vector<uint8_t>(staged.begin(), staged.end()));
      const auto journal = journal_encode(entries);
      atomic_write(path("journal"), journal.data(), journal.size(), durable_);
    } catch (...) {
      for (size_t k = 0; k < fresh && k < renames.size(); ++k)
        if (!renames[k].second.empty()) ::unlink(path(renames[k].second).c_str());
      throw;
    }
    apply(renames);
  }

  /// Finishes a complete journal left by a crash (a damaged one is dropped); removes every staged and temporary
  /// file of the folder and its subfolders, all stale while the caller holds the folder's lock.
  void recover() {
    if (auto j = read_file(path("journal"), 1ull << 40, "journal")) {
      if (auto entries = journal_decode(*j)) {
        Renames renames;
        for (auto& [target, staged] : *entries) renames.emplace_back(target, std::string(staged.begin(), staged.end()));
        apply(renames);
      } else {
        ::unlink(path("journal").c_str());
      }
    }
    std::vector<std::string> dirs{folder_};
    for (const auto& s : subfolders_) dirs.push_back(path(s));
    auto is_temp = [](const std::string& f) {
      return f.size() > 4 && f[0] == '.' &&
             (f.find(".ckpt.") != std::string::npos || f.compare(f.size() - 4, 4, ".tmp") == 0);
    };
    for (const auto& d : dirs) {
      if (!is_directory(d)) continue;
      for (const auto& f : list_dir(d))
        if (is_temp(f)) ::unlink(join_path(d, f).c_str());
    }
  }

  /// Whether a journal entry names files of this folder: the target is a top file or a chunk key of one of the
  /// subfolders, and the staged file is a hidden checkpoint file in the target's folder.
  bool entry_ok(const std::string& target, const std::string& staged) const {
    auto key_ok = [](const std::string& k) {
      if (k.empty() || k.size() > 256 || k.front() == '/' || k.back() == '/') return false;
      for (char c : k)
        if (!((c >= '0' && c <= '9') || c == '.' || c == '/' || c == 'c')) return false;
      return k.find("..") == std::string::npos && k.find("//") == std::string::npos;
    };
    const bool top = std::find(top_.begin(), top_.end(), target) != top_.end();
    if (!top) {
      const auto slash = target.find('/');
      if (slash == std::string::npos) return false;
      if (std::find(subfolders_.begin(), subfolders_.end(), target.substr(0, slash)) == subfolders_.end() ||
          !key_ok(target.substr(slash + 1)))
        return false;
    }
    const std::string base = base_name(staged);
    return (top ? staged.find('/') == std::string::npos : parent_path(staged) == parent_path(target)) &&
           base.size() > 1 && base[0] == '.' && base.find(".ckpt.") != std::string::npos &&
           base.find('/') == std::string::npos && staged.find("..") == std::string::npos;
  }

 private:
  /// Renames each staged file over its target (skipping those already renamed), then drops the journal.
  void apply(const Renames& renames) {
    for (const auto& [target, staged] : renames)
      if (!entry_ok(target, staged))
        throw Error("checkpoint", path("journal") + ": names a file that is not this quilt's (\"" +
                                      target.substr(0, 100) + "\" <- \"" + staged.substr(0, 100) +
                                      "\"); it was not written by qlty: remove it, or the whole prefix");
    for (const auto& [target, staged] : renames)
      if (::rename(path(staged).c_str(), path(target).c_str()) != 0 && errno != ENOENT)
        throw_io("rename", path(staged), errno);
    if (durable_) sync_folder(folder_, true);
    if (::unlink(path("journal").c_str()) != 0 && errno != ENOENT) throw_io("unlink", path("journal"), errno);
    if (durable_) sync_folder(folder_);
  }

  std::string folder_;
  std::vector<std::string> top_, subfolders_;
  bool durable_;
};

}  // namespace qlty::detail
