#error "qlty::core must not need <lz4.h>: this folder stands for a machine without it"
