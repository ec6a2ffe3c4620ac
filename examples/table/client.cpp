// C++ client: sends a stock table column by column (a DataFrame on the Python side) and reads
// the per-symbol summary table it answers; then the seed-004 layout (4-byte length + CSV
// text) and checks the summary pandas computes for it.
#include <cmath>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

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
            static const char* const syms[3] = {"AAA", "BBB", "CCC"};
            ferry::Call call = client.begin(30000);
            ferry::Writer w = call.writer();
            w.begin_table(rows);
            auto date = w.add_column<int64_t>("date");  // in shared memory
            auto open = w.add_column<double>("open");
            auto close = w.add_column<double>("close");
            auto volume = w.add_column<int64_t>("volume");
            std::vector<std::string_view> sym;
            for (size_t i = 0; i < static_cast<size_t>(rows); i++) {
                date[i] = 20260101 + static_cast<int64_t>(i);
                open[i] = 100 + 0.25 * static_cast<double>(i);
                close[i] = 100 + 0.5 * static_cast<double>(i);
                volume[i] = 1000 + static_cast<int64_t>(i);
                sym.emplace_back(syms[i % 3]);
            }
            w.put_string_column("sym", sym);
            w.end_table();
            ferry::Message reply = call.send_and_wait(30000);
            // The answer is a table: sym, rows, mean_close, total_volume, one row per symbol.
            auto r_sym = reply.find_column("sym"), r_rows = reply.find_column("rows");
            auto r_mean = reply.find_column("mean_close"), r_volume = reply.find_column("total_volume");
            if (!r_sym || !r_rows || !r_mean || !r_volume || reply.table_rows() != 3) return 1;
            std::cout << "table:";
            for (int64_t k = 0; k < 3; k++) {
                int64_t count = 0, vol = 0;
                double sum = 0;
                for (int64_t i = k; i < rows; i += 3) count++, vol += 1000 + i, sum += 100 + 0.5 * static_cast<double>(i);
                const auto n = r_rows->as<int64_t>()[static_cast<size_t>(k)];
                if (r_sym->string(k) != syms[k] || n != count || r_volume->as<int64_t>()[static_cast<size_t>(k)] != vol ||
                    std::fabs(r_mean->as<double>()[static_cast<size_t>(k)] - sum / static_cast<double>(count)) > 1e-9) {
                    std::cerr << "wrong per-symbol summary\n";
                    return 1;
                }
                std::cout << " " << r_sym->string(k) << "=" << n;
            }
            std::cout << "\n";
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
