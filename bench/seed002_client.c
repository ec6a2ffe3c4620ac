/* The seed-002 socket recipe's client, as written there: for each frame, its length as 16
 * ASCII bytes, then the JPEG bytes with one send() per byte, then wait for the server's
 * acknowledgement. Prints frames/s as JSON.  Usage: seed002_client PORT JPEG_FILE FRAMES */
#include "bench.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 1;
    static unsigned char jpg[16 << 20];
    size_t len = fread(jpg, 1, sizeof jpg, f);
    fclose(f);
    int frames = atoi(argv[3]);
    pin_cpu(0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons((uint16_t)atoi(argv[1])) };
    if (connect(s, (struct sockaddr *)&a, sizeof a)) return 1;
    double start = now_us();
    for (int i = 0; i < frames; i++) {
        char header[17];
        snprintf(header, sizeof header, "%-16zu", len);
        send(s, header, 16, 0);
        for (size_t k = 0; k < len; k++) send(s, &jpg[k], 1, 0);
        char ack[32];
        if (recv(s, ack, sizeof ack, 0) <= 0) return 1;
    }
    double wall = (now_us() - start) / 1e6;
    printf("{\"throughput_per_s\": %.3f, \"p50_us\": %.1f, \"jpeg_bytes\": %zu}\n", frames / wall, wall / frames * 1e6, len);
    close(s);
    return 0;
}
