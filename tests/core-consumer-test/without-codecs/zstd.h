#error "qlty::core must not need <zstd.h>: this folder stands for a machine without it"
