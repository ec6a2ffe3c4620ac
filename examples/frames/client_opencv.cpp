// OpenCV variant (built only when OpenCV is installed): captures frames from a video file or
// camera and sends each cv::Mat as a view — ferry copies it once, into shared memory.
#include <iostream>

#include <opencv2/opencv.hpp>

#include <ferry.hpp>

int main(int argc, char** argv) {
    const std::string url = argc > 1 ? argv[1] : "shm://frames";
    cv::VideoCapture cap;
    if (argc > 2) cap.open(argv[2]); else cap.open(0);
    if (!cap.isOpened()) { std::cerr << "cannot open the video source\n"; return 1; }
    ferry::Client client(url);
    cv::Mat frame;
    int n = 0;
    auto start = cv::getTickCount();
    while (cap.read(frame)) {
        const int32_t header[3] = {frame.cols, frame.rows, frame.type()};
        auto call = client.call({{"header", ferry::TensorView::of(header, {3})}, {"frame", ferry::mat_view(frame)}}, 30000);
        auto means = call.wait(30000).at(0).as<float>();
        if (++n % 30 == 0) {
            double fps = n / ((cv::getTickCount() - start) / cv::getTickFrequency());
            std::cout << "fps: " << fps << "  BGR means " << means[0] << " " << means[1] << " " << means[2] << "\n";
        }
    }
    return 0;
}
