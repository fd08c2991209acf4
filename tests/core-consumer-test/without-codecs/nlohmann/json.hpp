#error "qlty::core must not need <nlohmann/json.hpp>: this folder stands for a machine without it"
