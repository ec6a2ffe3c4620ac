// C++ client: streams synthetic 1080p BGR frames, each decoded straight into shared memory,
// with the seed's {width, height, type} header; checks each result and prints fps.
// With OpenCV, ferry::mat_view(cv::Mat) sends a cv::Mat the same way (see client_opencv.cpp).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>

#include <ferry.hpp>

int main(int argc, char** argv) {
    const std::string url = argc > 1 ? argv[1] : "shm://frames";
    const int count = argc > 2 ? std::atoi(argv[2]) : 200;
    constexpr int W = 1920, H = 1080, CV_8UC3 = 16;
    try {
        ferry::Client client(url);
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < count; i++) {
            ferry::Call call = client.begin(30000);
            ferry::Writer w = call.writer();
            const int32_t header[3] = {W, H, CV_8UC3};
            w.put("header", ferry::TensorView::of(header, {3}));
            auto pixels = w.add<uint8_t>("frame", {H, W, 3});
            std::fill(pixels.begin(), pixels.end(), static_cast<uint8_t>((i * 7) % 256));  // "decode" into the slot
            auto means = call.send_and_wait(30000).at(0).as<float>();
            if (means.size() != 3 || means[0] != static_cast<float>((i * 7) % 256)) {
                std::cerr << "frame " << i << ": wrong result\n";
                return 1;
            }
        }
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::cout << count << " frames " << W << "x" << H << ", fps: " << count / secs << "\n";
    } catch (const ferry::Error& e) {
        std::cerr << "ferry: " << e.code_name() << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
