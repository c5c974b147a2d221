// int8 kernels for AVX-VNNI (compiled with -mavx2 -mfma -mavxvnni): 256-bit vpdpbusd, VEX-encoded.
#include "int8_kernels.h"
#include "int8_x86.h"

#if !defined(__AVXVNNI__)
#error "compile with -mavxvnni"
#endif

namespace lenet {

const Int8Table* int8_table_avx_vnni() {
    using D = DotAVX2;
    static const Int8Table t = {"avx_vnni", D::V, int8k::conv<D>, int8k::dense<D>, int8k::regroup<D>,
                                "qconv_4oc_x_16px_u8s8__avx_vnni", "qdense_32out_u8s8__avx_vnni"};
    return &t;
}

}  // namespace lenet
