// int8 kernels for AVX2 without VNNI (compiled with -mavx2 -mfma): vpmaddwd on bytes widened to 16 bits.
#include "int8_kernels.h"
#include "int8_x86.h"

namespace lenet {

const Int8Table* int8_table_avx2() {
    using D = DotAVX2;
    static const Int8Table t = {"avx2", D::V, int8k::conv<D>, int8k::dense<D>, int8k::regroup<D>,
                                "qconv_4oc_x_16px_u8s8__avx2", "qdense_32out_u8s8__avx2"};
    return &t;
}

}  // namespace lenet
