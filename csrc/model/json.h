// A small JSON reader and writer for model-file headers: objects, arrays, strings (with \u escapes), numbers,
// true/false/null. Errors throw std::invalid_argument naming the byte offset.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lenet::json {

class Value {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };
    Value() = default;
    static Value number(double v);
    static Value string(std::string v);
    static Value boolean(bool v);
    static Value array();
    static Value object();

    Type type() const { return type_; }
    bool is(Type t) const { return type_ == t; }
    // Typed access; `what` names the value in the error when the type differs.
    double as_number(const std::string& what) const;
    int as_int(const std::string& what) const;  // a whole number in int range
    bool as_bool(const std::string& what) const;
    const std::string& as_string(const std::string& what) const;
    const std::vector<Value>& as_array(const std::string& what) const;
    // Object members: `at` throws naming the missing key, `find` returns null when absent.
    const Value& at(const std::string& key, const std::string& what) const;
    const Value* find(const std::string& key) const;

    Value& push(Value v);                        // arrays
    Value& set(const std::string& key, Value v); // objects, keeping insertion order
    std::string dump() const;                    // compact text

private:
    Type type_ = Type::Null;
    bool b_ = false;
    double n_ = 0;
    std::string s_;
    std::vector<Value> items_;                   // array items, or object values
    std::vector<std::string> keys_;              // object keys, parallel to items_
};

Value parse(const std::string& text);

}  // namespace lenet::json
