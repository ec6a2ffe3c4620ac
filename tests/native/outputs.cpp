// The C++ twin of outputs.c: sends one float32 array (0, 1, ..., 5) and prints the reply's
// tensors by index (name, dtype, shape, first value) and its `ferry.outputs` metadata
// ("tuple" when the Python model returned a tuple or list of arrays). tests/test_fastcall.py
// checks that it prints what the C client prints.
#include <cstdio>
#include <string>

#include <ferry.hpp>

int main(int argc, char** argv) {
    if (argc < 2) { std::fprintf(stderr, "usage: %s URL\n", argv[0]); return 2; }
    try {
        ferry::Client client(argv[1]);
        const float x[6] = {0, 1, 2, 3, 4, 5};
        auto call = client.call({{"input", ferry::TensorView::of(x, ferry::Shape{6})}}, 10000);
        ferry::Message reply = call.wait(10000);
        auto outputs = reply.meta("ferry.outputs");
        std::printf("outputs %s\n", outputs ? std::string(*outputs).c_str() : "-");
        for (size_t i = 0; i < reply.size(); i++) {
            ferry::TensorView t = reply.at(i);
            std::printf("%zu %s dtype=%d shape=", i, std::string(t.name).c_str(), t.dtype);
            for (int d = 0; d < t.shape.ndim; d++) std::printf(d ? "x%lld" : "%lld", static_cast<long long>(t.shape.dims[d]));
            if (t.dtype == FERRY_DTYPE_FLOAT32 && t.nbytes >= 4) std::printf(" first=%g", static_cast<double>(t.as<float>()[0]));
            std::printf("\n");
        }
    } catch (const ferry::Error& e) {
        std::printf("error %s\n", e.what());
        return 1;
    }
    return 0;
}
