// C++ client: sends a stock table as columns (filled in place) and then in the seed-004
// layout (4-byte length + CSV text), and checks the summary pandas computes for each.
#include <cmath>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include <ferry.hpp>

namespace {
bool check(const ferry::Message& reply, int64_t rows, const char* how) {
    int64_t n = reply.find("rows")->as<int64_t>()[0];
    double mean = reply.find("mean_close")->as<double>()[0];
    int64_t volume = reply.find("total_volume")->as<int64_t>()[0];
    std::cout << how << ": rows=" << n << " mean_close=" << mean << " total_volume=" << volume << "\n";
    return n == rows && std::fabs(mean - (100 + 0.5 * static_cast<double>(rows - 1) / 2)) < 1e-9 &&
           volume == 1000 * rows + rows * (rows - 1) / 2;
}
}  // namespace

int main(int argc, char** argv) {
    const std::string url = argc > 1 ? argv[1] : "shm://table";
    const int64_t rows = argc > 2 ? std::stoll(argv[2]) : 1000;
    try {
        ferry::Client client(url);
        {
            ferry::Call call = client.begin(30000);
            ferry::Writer w = call.writer();
            auto date = w.add<int64_t>("date", {rows});
            auto open = w.add<double>("open", {rows});
            auto close = w.add<double>("close", {rows});
            auto volume = w.add<int64_t>("volume", {rows});
            for (size_t i = 0; i < static_cast<size_t>(rows); i++) {
                date[i] = 20260101 + static_cast<int64_t>(i);
                open[i] = 100 + 0.25 * static_cast<double>(i);
                close[i] = 100 + 0.5 * static_cast<double>(i);
                volume[i] = 1000 + static_cast<int64_t>(i);
            }
            if (!check(call.send_and_wait(30000), rows, "columns")) return 1;
        }
        {
            std::ostringstream csv;
            csv << "date,open,close,volume\n";
            for (int64_t i = 0; i < rows; i++)
                csv << 20260101 + i << "," << 100 + 0.25 * static_cast<double>(i) << "," << 100 + 0.5 * static_cast<double>(i) << "," << 1000 + i << "\n";
            const std::string text = csv.str();
            ferry::Call call = client.begin(30000);
            auto raw = call.writer().add<uint8_t>("csv", {static_cast<int64_t>(4 + text.size())});
            const uint32_t length = static_cast<uint32_t>(text.size());  // the seed's 4-byte length (little-endian)
            std::memcpy(raw.data(), &length, 4);
            std::memcpy(raw.data() + 4, text.data(), text.size());
            if (!check(call.send_and_wait(30000), rows, "csv")) return 1;
        }
    } catch (const ferry::Error& e) {
        std::cerr << "ferry: " << e.code_name() << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
