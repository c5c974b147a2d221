#include "model_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include <sys/stat.h>
#include <unistd.h>

namespace lenet::model {

namespace {

constexpr char kMagic[8] = {'L', 'E', 'N', 'E', 'T', 'M', 'D', 'L'};
constexpr size_t kPreamble = 24, kAlign = 64;

size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

uint32_t get32(const unsigned char* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t get64(const unsigned char* p) { return uint64_t(get32(p)) | uint64_t(get32(p + 4)) << 32; }
void put32(unsigned char* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = (unsigned char)(v >> (8 * i));
}
void put64(unsigned char* p, uint64_t v) {
    put32(p, uint32_t(v));
    put32(p + 4, uint32_t(v >> 32));
}

[[noreturn]] void fail(const std::string& path, const std::string& why) { throw ModelFileError(path + ": " + why); }

}  // namespace

size_t dtype_size(const std::string& dtype) {
    if (dtype == "float32" || dtype == "int32") return 4;
    if (dtype == "int8" || dtype == "uint8") return 1;
    return 0;
}

size_t Tensor::elements() const {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    return n;
}

uint32_t crc32(const unsigned char* data, size_t n, uint32_t crc) {
    static const auto table = [] {
        std::vector<uint32_t> t(256);
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    crc = ~crc;
    for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

ModelFile read_model_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
    std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) fail(path, "read error");
    if (bytes.size() < 8 || std::memcmp(bytes.data(), kMagic, 8) != 0)
        fail(path, "not a lenet model file (it does not start with \"LENETMDL\")");
    if (bytes.size() < kPreamble + 4)
        fail(path, "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the fixed preamble");
    const uint32_t version = get32(&bytes[8]);
    if (version == 0 || version > kModelFormatVersion)
        fail(path, "format version " + std::to_string(version) + " is not supported (this lenet reads version " +
                       std::to_string(kModelFormatVersion) + "; a newer lenet wrote it?)");
    const uint64_t header_len = get32(&bytes[12]), payload_len = get64(&bytes[16]);
    const uint64_t payload_start = aligned(kPreamble + header_len);
    if (payload_len > (uint64_t(1) << 40)) fail(path, "corrupt: payload length " + std::to_string(payload_len));
    const uint64_t expect = payload_start + payload_len + 4;
    if (bytes.size() < expect)
        fail(path, "truncated: the header announces " + std::to_string(expect) + " bytes, the file has " +
                       std::to_string(bytes.size()));
    if (bytes.size() > expect)
        fail(path, "corrupt: " + std::to_string(bytes.size() - expect) + " unexpected bytes after the checksum");
    const uint32_t stored = get32(&bytes[size_t(expect - 4)]);
    const uint32_t actual = crc32(bytes.data(), size_t(expect - 4));
    if (stored != actual) fail(path, "corrupt: checksum mismatch (the file was damaged or modified)");

    ModelFile f;
    try {
        f.header = json::parse(std::string(bytes.begin() + kPreamble, bytes.begin() + long(kPreamble + header_len)));
        f.header.at("graph", "header");
        const unsigned char* payload = bytes.data() + payload_start;
        for (const json::Value& t : f.header.at("tensors", "header").as_array("header tensors")) {
            Tensor x;
            x.name = t.at("name", "tensor").as_string("tensor name");
            const std::string what = "tensor \"" + x.name + "\"";
            x.dtype = t.at("dtype", what).as_string(what + " dtype");
            const size_t esize = dtype_size(x.dtype);
            if (!esize) throw std::invalid_argument(what + ": unknown dtype \"" + x.dtype + "\"");
            uint64_t count = 1;  // 64-bit on every target: a 32-bit size_t would overflow on a hostile shape
            for (const json::Value& d : t.at("shape", what).as_array(what + " shape")) {
                const int v = d.as_int(what + " shape");
                if (v < 0 || (v && count > payload_len / uint64_t(v)))
                    throw std::invalid_argument(what + ": bad shape");
                x.shape.push_back(v);
                count *= uint64_t(v);
            }
            const double offset = t.at("offset", what).as_number(what + " offset");
            const double nbytes = t.at("nbytes", what).as_number(what + " nbytes");
            if (nbytes != double(count * esize))
                throw std::invalid_argument(what + ": nbytes does not match its shape and dtype");
            if (offset < 0 || offset + nbytes > double(payload_len))
                throw std::invalid_argument(what + ": lies outside the payload");
            x.data.assign(payload + size_t(offset), payload + size_t(offset + nbytes));
            f.tensors.push_back(std::move(x));
        }
    } catch (const std::invalid_argument& e) {
        fail(path, std::string("malformed header: ") + e.what());
    }
    return f;
}

void write_model_file(const std::string& path, const ModelFile& file) {
    json::Value header = file.header.is(json::Value::Type::Object) ? file.header : json::Value::object();
    json::Value table = json::Value::array();
    size_t payload_len = 0;
    std::vector<size_t> offsets;
    for (const Tensor& t : file.tensors) {
        if (!dtype_size(t.dtype) || t.data.size() != t.elements() * dtype_size(t.dtype))
            throw std::invalid_argument("tensor \"" + t.name + "\": data does not match its shape and dtype");
        payload_len = aligned(payload_len);
        offsets.push_back(payload_len);
        json::Value e = json::Value::object(), shape = json::Value::array();
        for (int64_t d : t.shape) shape.push(json::Value::number(double(d)));
        e.set("name", json::Value::string(t.name));
        e.set("dtype", json::Value::string(t.dtype));
        e.set("shape", std::move(shape));
        e.set("offset", json::Value::number(double(payload_len)));
        e.set("nbytes", json::Value::number(double(t.data.size())));
        table.push(std::move(e));
        payload_len += t.data.size();
    }
    header.set("tensors", std::move(table));
    const std::string text = header.dump();
    const size_t payload_start = aligned(kPreamble + text.size());
    std::vector<unsigned char> bytes(payload_start + payload_len + 4, 0);
    std::memcpy(bytes.data(), kMagic, 8);
    put32(&bytes[8], kModelFormatVersion);
    put32(&bytes[12], uint32_t(text.size()));
    put64(&bytes[16], payload_len);
    std::memcpy(&bytes[kPreamble], text.data(), text.size());
    for (size_t i = 0; i < file.tensors.size(); ++i)
        if (!file.tensors[i].data.empty())
            std::memcpy(&bytes[payload_start + offsets[i]], file.tensors[i].data.data(), file.tensors[i].data.size());
    put32(&bytes[bytes.size() - 4], crc32(bytes.data(), bytes.size() - 4));

    // Atomic replace: a complete temporary file beside the target, flushed to disk, then renamed over it.
    const std::string tmp = path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(std::random_device{}());
    FILE* out = std::fopen(tmp.c_str(), "wb");
    if (!out) fail(path, std::string("cannot write: ") + std::strerror(errno));
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size() && std::fflush(out) == 0 &&
                    fsync(fileno(out)) == 0;
    const int err = errno;
    if (std::fclose(out) != 0 || !ok) {
        std::remove(tmp.c_str());
        fail(path, std::string("write failed: ") + std::strerror(ok ? errno : err));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        std::remove(tmp.c_str());
        fail(path, std::string("cannot replace: ") + std::strerror(e));
    }
}

}  // namespace lenet::model
