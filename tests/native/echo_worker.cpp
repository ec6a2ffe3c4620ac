// The same worker with ferry.hpp: answers every request with its tensors doubled (uint8 +1,
// float32 ×2) until a request carries metadata "stop".
#include <cstring>
#include <iostream>
#include <string>

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
                } else {
                    throw std::runtime_error("only uint8 and float32 tensors");
                }
            }
        }, [&] { return !stop; });
    } catch (const ferry::Error& e) {
        std::cerr << "ferry: " << e.code_name() << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
