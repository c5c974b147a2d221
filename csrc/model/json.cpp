#include "json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace lenet::json {

Value Value::number(double v) { Value x; x.type_ = Type::Number; x.n_ = v; return x; }
Value Value::string(std::string v) { Value x; x.type_ = Type::String; x.s_ = std::move(v); return x; }
Value Value::boolean(bool v) { Value x; x.type_ = Type::Bool; x.b_ = v; return x; }
Value Value::array() { Value x; x.type_ = Type::Array; return x; }
Value Value::object() { Value x; x.type_ = Type::Object; return x; }

namespace {

const char* type_name(Value::Type t) {
    switch (t) {
        case Value::Type::Null: return "null";
        case Value::Type::Bool: return "a boolean";
        case Value::Type::Number: return "a number";
        case Value::Type::String: return "a string";
        case Value::Type::Array: return "an array";
        case Value::Type::Object: return "an object";
    }
    return "?";
}

[[noreturn]] void wrong(const std::string& what, const char* want, Value::Type got) {
    throw std::invalid_argument(what + " must be " + want + ", got " + type_name(got));
}

}  // namespace

double Value::as_number(const std::string& what) const {
    if (type_ != Type::Number) wrong(what, "a number", type_);
    return n_;
}
int Value::as_int(const std::string& what) const {
    const double v = as_number(what);
    if (v != std::floor(v) || v < -2147483648.0 || v > 2147483647.0)
        throw std::invalid_argument(what + " must be a whole number, got " + std::to_string(v));
    return int(v);
}
bool Value::as_bool(const std::string& what) const {
    if (type_ != Type::Bool) wrong(what, "true or false", type_);
    return b_;
}
const std::string& Value::as_string(const std::string& what) const {
    if (type_ != Type::String) wrong(what, "a string", type_);
    return s_;
}
const std::vector<Value>& Value::as_array(const std::string& what) const {
    if (type_ != Type::Array) wrong(what, "an array", type_);
    return items_;
}
const Value* Value::find(const std::string& key) const {
    if (type_ != Type::Object) return nullptr;
    for (size_t i = 0; i < keys_.size(); ++i)
        if (keys_[i] == key) return &items_[i];
    return nullptr;
}
const Value& Value::at(const std::string& key, const std::string& what) const {
    if (type_ != Type::Object) wrong(what, "an object", type_);
    if (const Value* v = find(key)) return *v;
    throw std::invalid_argument(what + " has no \"" + key + "\"");
}
Value& Value::push(Value v) {
    items_.push_back(std::move(v));
    return items_.back();
}
Value& Value::set(const std::string& key, Value v) {
    for (size_t i = 0; i < keys_.size(); ++i)
        if (keys_[i] == key) return items_[i] = std::move(v);
    keys_.push_back(key);
    items_.push_back(std::move(v));
    return items_.back();
}

namespace {

void dump_string(const std::string& s, std::string& out) {
    out += '"';
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    out += '"';
}

}  // namespace

std::string Value::dump() const {
    std::string out;
    switch (type_) {
        case Type::Null: return "null";
        case Type::Bool: return b_ ? "true" : "false";
        case Type::Number: {
            if (!std::isfinite(n_)) return "null";
            char buf[32];
            if (n_ == std::floor(n_) && std::fabs(n_) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", n_);
            else std::snprintf(buf, sizeof buf, "%.17g", n_);
            return buf;
        }
        case Type::String: dump_string(s_, out); return out;
        case Type::Array:
        case Type::Object: {
            const bool obj = type_ == Type::Object;
            out += obj ? '{' : '[';
            for (size_t i = 0; i < items_.size(); ++i) {
                if (i) out += ',';
                if (obj) {
                    dump_string(keys_[i], out);
                    out += ':';
                }
                out += items_[i].dump();
            }
            out += obj ? '}' : ']';
            return out;
        }
    }
    return out;
}

namespace {

class Parser {
public:
    explicit Parser(const std::string& t) : t_(t) {}

    Value document() {
        Value v = value(0);
        space();
        if (i_ != t_.size()) fail("unexpected text after the value");
        return v;
    }

private:
    const std::string& t_;
    size_t i_ = 0;

    [[noreturn]] void fail(const std::string& why) const {
        throw std::invalid_argument("invalid JSON at byte " + std::to_string(i_) + ": " + why);
    }
    void space() {
        while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\r' || t_[i_] == '\t')) ++i_;
    }
    bool eat(char c) {
        space();
        if (i_ < t_.size() && t_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    void expect(char c) {
        if (!eat(c)) fail(std::string("expected '") + c + "'");
    }
    bool word(const char* w) {
        size_t n = 0;
        while (w[n]) ++n;
        if (t_.compare(i_, n, w) != 0) return false;
        i_ += n;
        return true;
    }

    Value value(int depth) {
        if (depth > 64) fail("nested too deeply");
        space();
        if (i_ >= t_.size()) fail("unexpected end");
        const char c = t_[i_];
        if (c == '{') {
            ++i_;
            Value v = Value::object();
            if (eat('}')) return v;
            do {
                space();
                if (i_ >= t_.size() || t_[i_] != '"') fail("expected a key string");
                std::string key = string();
                expect(':');
                v.set(key, value(depth + 1));
            } while (eat(','));
            expect('}');
            return v;
        }
        if (c == '[') {
            ++i_;
            Value v = Value::array();
            if (eat(']')) return v;
            do v.push(value(depth + 1));
            while (eat(','));
            expect(']');
            return v;
        }
        if (c == '"') return Value::string(string());
        if (word("true")) return Value::boolean(true);
        if (word("false")) return Value::boolean(false);
        if (word("null")) return Value();
        if (c == '-' || (c >= '0' && c <= '9')) {
            const char* start = t_.c_str() + i_;
            char* end = nullptr;
            const double d = std::strtod(start, &end);
            if (end == start) fail("bad number");
            i_ += size_t(end - start);
            return Value::number(d);
        }
        fail(std::string("unexpected character '") + c + "'");
    }

    static void utf8(unsigned cp, std::string& out) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xC0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += char(0xE0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        } else {
            out += char(0xF0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3F));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        }
    }
    unsigned hex4() {
        if (i_ + 4 > t_.size()) fail("short \\u escape");
        unsigned v = 0;
        for (int k = 0; k < 4; ++k) {
            const char h = t_[i_++];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') v |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') v |= unsigned(h - 'A' + 10);
            else fail("bad \\u escape");
        }
        return v;
    }
    std::string string() {
        ++i_;  // opening quote
        std::string out;
        while (true) {
            if (i_ >= t_.size()) fail("unterminated string");
            const char c = t_[i_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= t_.size()) fail("unterminated escape");
            switch (const char e = t_[i_++]) {
                case '"': case '\\': case '/': out += e; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00 && i_ + 1 < t_.size() && t_[i_] == '\\' && t_[i_ + 1] == 'u') {
                        i_ += 2;
                        const unsigned lo = hex4();
                        if (lo < 0xDC00 || lo >= 0xE000) fail("bad surrogate pair");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    utf8(cp, out);
                    break;
                }
                default: fail("bad escape");
            }
        }
    }
};

}  // namespace

Value parse(const std::string& text) { return Parser(text).document(); }

}  // namespace lenet::json
