// The lenet model file: graph, parameters and metadata in one versioned, checksummed file, read and written here
// for the Python layer and the C API alike.
//
//   offset  size  field
//   0       8     magic "LENETMDL"
//   8       4     format version (uint32, little-endian; this code reads and writes 1)
//   12      4     header length H in bytes (uint32)
//   16      8     payload length P in bytes (uint64)
//   24      H     header: UTF-8 JSON {"graph": {...} (see graph.h), "metadata": {...},
//                   "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
//   ...           zero padding to a multiple of 64
//   ...     P     payload: the tensors, little-endian, each at a multiple of 64 from the payload start
//   end-4   4     CRC-32 (the zlib polynomial) of every byte before it
//
// Writing goes to a temporary file in the same folder, which is renamed over the target only when complete.
#pragma once
#include <stdint.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "json.h"

namespace lenet::model {

struct ModelFileError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Tensor {
    std::string name;
    std::string dtype;              // "float32", "int32", "int8" or "uint8"
    std::vector<int64_t> shape;
    std::vector<unsigned char> data;
    size_t elements() const;
};

size_t dtype_size(const std::string& dtype);  // 0 for an unknown dtype

struct ModelFile {
    json::Value header;             // as read: with "tensors"; to write: "graph" and "metadata" (tensors are added)
    std::vector<Tensor> tensors;
};

constexpr uint32_t kModelFormatVersion = 1;

// Throws ModelFileError naming the problem: missing file, not a model file, newer version, truncated, corrupt
// (checksum), malformed header or tensor table.
ModelFile read_model_file(const std::string& path);
void write_model_file(const std::string& path, const ModelFile& file);

uint32_t crc32(const unsigned char* data, size_t n, uint32_t crc = 0);

}  // namespace lenet::model
