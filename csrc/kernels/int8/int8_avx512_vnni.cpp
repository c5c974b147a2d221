// int8 kernels for AVX-512 VNNI (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni): 512-bit vpdpbusd.
#include "int8_kernels.h"
#include "int8_x86.h"

#if !defined(__AVX512VNNI__)
#error "compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif

namespace lenet {

const Int8Table* int8_table_avx512_vnni() {
    using D = DotAVX512;
    static const Int8Table t = {"avx512_vnni", D::V, int8k::conv<D>, int8k::dense<D>, int8k::regroup<D>,
                                "qconv_4oc_x_32px_u8s8__avx512_vnni", "qdense_64out_u8s8__avx512_vnni"};
    return &t;
}

}  // namespace lenet
