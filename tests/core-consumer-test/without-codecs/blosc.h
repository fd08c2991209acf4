#error "qlty::core must not need <blosc.h>: this folder stands for a machine without it"
