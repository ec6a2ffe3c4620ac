// C++ client: reads nine 28×28 digit images (raw bytes) and prints the model's labels.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <vector>

#include <ferry.hpp>

int main(int argc, char** argv) {
    const std::string url = argc > 1 ? argv[1] : "shm://digits";
    std::vector<uint8_t> images(9 * 28 * 28, 0);
    if (argc > 2) {
        std::ifstream f(argv[2], std::ios::binary);
        if (!f.read(reinterpret_cast<char*>(images.data()), static_cast<std::streamsize>(images.size()))) {
            std::cerr << "cannot read " << argv[2] << "\n";
            return 1;
        }
    }
    try {
        ferry::Client client(url);
        ferry::Call call = client.begin(30000);
        auto slot = call.writer().add<uint8_t>("digits", {9, 28, 28});  // in shared memory
        std::copy(images.begin(), images.end(), slot.begin());
        ferry::Message reply = call.send_and_wait(30000);
        auto labels = reply.at(0).as<int64_t>();
        std::cout << "labels:";
        for (int64_t v : labels) std::cout << " " << v;
        std::cout << "\n";
    } catch (const ferry::Error& e) {
        std::cerr << "ferry: " << e.code_name() << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
