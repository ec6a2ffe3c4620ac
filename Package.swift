// swift-tools-version:6.2
import PackageDescription

// Layers, bottom to top (see docs/architecture.md):
//   CFerryLinux  – C shim for what Swift cannot call directly (futex, shm_open, OFD locks)
//   FerryCore    – message format (Format/), the transport seam and the generic client
//                  (Transport/), the shm:// transport and worker (Shm/), the tcp:// client (TCP/),
//                  the redis:// client and the Redis keys and scripts both sides share (Redis/)
//   FerryGateway – the server sides: the tcp:// SwiftNIO gateway and the redis:// node, each in
//                  front of a local shm:// channel
//   FerryC       – the C ABI: @_cdecl exports that only convert and check arguments → libferry.so
//   ferry        – the command-line tool
let package = Package(
    name: "Ferry",
    products: [
        .library(name: "FerryCore", targets: ["FerryCore"]),
        .library(name: "ferry", type: .dynamic, targets: ["FerryC"]),
        .executable(name: "ferry-cli", targets: ["ferry"]),
        .executable(name: "example-digits", targets: ["example-digits"]),
        .executable(name: "example-frames", targets: ["example-frames"]),
        .executable(name: "example-table", targets: ["example-table"]),
        .executable(name: "example-stream", targets: ["example-stream"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(name: "CFerryLinux"),
        // Debian's zstd and libjpeg-turbo: tensor compression on slow tcp:// links.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        // Debian's hiredis: the Redis protocol for redis:// clients and `ferry serve --redis` nodes.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .target(name: "CFerryABI"),
        .target(
            name: "FerryCore",
            dependencies: [
                "CFerryLinux",
                "CZstd",
                "CTurboJPEG",
                "CHiredis",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Crypto", package: "swift-crypto"),
                // For its BoringSSL (CNIOBoringSSL): TLS for the tcp:// client's blocking socket.
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "FerryC",
            dependencies: ["FerryCore", "CFerryABI", "CFerryLinux"],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib",
                    // swift-crypto (tcp:// authentication) uses FoundationEssentials, whose
                    // collections library the static link does not pull in by itself.
                    "-Xlinker", "-l_FoundationCollections", "-Xlinker", "-l_FoundationCShims",
                    "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/FerryC/exports.map",
                    "-Xlinker", "-soname=libferry.so.0",
                ])
            ]
        ),
        .target(
            name: "FerryGateway",
            dependencies: [
                "FerryCore",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "ferry",
            dependencies: [
                "FerryCore",
                "FerryGateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(name: "FerryCoreTests", dependencies: ["FerryCore"]),
        .testTarget(name: "FerryGatewayTests", dependencies: ["FerryCore", "FerryGateway"]),
        // The Swift clients of examples/ (one per pattern; the other languages sit beside them).
        .executableTarget(name: "example-digits", dependencies: ["FerryCore"], path: "examples/digits/swift"),
        .executableTarget(name: "example-frames", dependencies: ["FerryCore"], path: "examples/frames/swift"),
        .executableTarget(name: "example-table", dependencies: ["FerryCore"], path: "examples/table/swift"),
        .executableTarget(name: "example-stream", dependencies: ["FerryCore"], path: "examples/stream/swift"),
    ]
)
