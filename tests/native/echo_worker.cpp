// The same worker with ferry.hpp: answers every request with its tensors doubled (uint8 +1,
// float32 ×2; numpy's fixed-width strings, `<U` and `S`, read one by one and answered with
// ASCII letters upper-cased) until a request carries metadata "stop".
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <ferry.hpp>

int main(int argc, char** argv) {
    if (argc < 2) { std::cerr << "usage: " << argv[0] << " URL\n"; return 2; }
    try {
        ferry::Worker worker(argv[1]);
        std::cout << "serving" << std::endl;
        bool stop = false;
        worker.serve([&](const ferry::Message& req, ferry::Writer& out) {
            if (req.meta("stop")) stop = true;
            for (size_t i = 0; i < req.size(); i++) {
                ferry::TensorView t = req.at(i);
                const std::string name(t.name);
                if (t.dtype == FERRY_DTYPE_UINT8) {
                    auto src = t.as<uint8_t>();
                    auto dst = out.add<uint8_t>(name.c_str(), t.shape);
                    for (size_t k = 0; k < src.size(); k++) dst[k] = static_cast<uint8_t>(src[k] + 1);
                } else if (t.dtype == FERRY_DTYPE_FLOAT32) {
                    auto src = t.as<float>();
                    auto dst = out.add<float>(name.c_str(), t.shape);
                    for (size_t k = 0; k < src.size(); k++) dst[k] = src[k] * 2;
                } else if (t.dtype == FERRY_DTYPE_UTF32 || t.dtype == FERRY_DTYPE_FIXED_BYTES) {
                    // Read through the string accessors (padding removed), written back padded.
                    const bool wide = t.dtype == FERRY_DTYPE_UTF32;
                    const size_t width = static_cast<size_t>(t.shape.dims[t.shape.ndim - 1]);
                    std::vector<char32_t> units(static_cast<size_t>(t.strings()) * width, 0);
                    std::vector<char> bytes(units.size(), 0);
                    for (int64_t k = 0; k < t.strings(); k++) {
                        auto up = [](auto c) { return (c >= 'a' && c <= 'z') ? static_cast<decltype(c)>(c - 32) : c; };
                        if (wide) {
                            auto s = t.utf32(k);
                            for (size_t j = 0; j < s.size(); j++) units[k * width + j] = up(s[j]);
                        } else {
                            auto s = t.fixed_bytes(k);
                            for (size_t j = 0; j < s.size(); j++) bytes[k * width + j] = up(s[j]);
                        }
                    }
                    ferry::TensorView v = t;
                    v.data = wide ? static_cast<const void*>(units.data()) : static_cast<const void*>(bytes.data());
                    out.put(name.c_str(), v);
                } else {
                    throw std::runtime_error("only uint8, float32 and fixed-width string tensors");
                }
            }
        }, [&] { return !stop; });
    } catch (const ferry::Error& e) {
        std::cerr << "ferry: " << e.code_name() << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
