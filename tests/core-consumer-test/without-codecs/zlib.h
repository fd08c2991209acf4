#error "qlty::core must not need <zlib.h>: this folder stands for a machine without it"
