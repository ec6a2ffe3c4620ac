// swift-tools-version:6.2
import PackageDescription

// Layers, bottom to top (see docs/architecture.md):
//   CFerryLinux   – C shim for what Swift cannot call directly (futex, shm_open, OFD locks)
//   FerryCore     – message format (Format/), the transport seam and the generic client
//                   (Transport/), the shm:// transport and worker (Shm/), streams (Stream/).
//                   Builds with swift-atomics alone: no SwiftNIO, BoringSSL, swift-crypto,
//                   zstd, libjpeg-turbo or hiredis.
//   FerryWire     – what crosses a tcp:// link: frames and compressed tensors (zstd, JPEG)
//   FerryTCP      – the blocking socket stream (TLS through BoringSSL) and the tcp:// client
//   FerryRedis    – the redis:// client and the Redis keys and scripts both sides share
//   FerryNetwork  – registers tcp:// and redis:// with the core's URL-scheme registry
//   FerryGateway  – the server sides: the tcp:// SwiftNIO gateway and the redis:// node, each in
//                   front of a local shm:// channel
//   FerryC        – the C ABI: @_cdecl exports that only convert and check arguments → libferry.so
//   ferry         – the command-line tool
//
// The trait "Network" (on by default) puts tcp://, redis://, `serve --listen/--redis/--metrics`
// into libferry.so and `ferry`. `make demo` builds with it off (in .build-demo), so a first
// run compiles only what shared memory needs.
let network: TargetDependencyCondition? = .when(traits: ["Network"])

// What a static link of Foundation needs beyond `-static-stdlib` (which SwiftPM's
// --static-swift-stdlib adds for us, but only by changing every module's build flags).
let staticFoundation = ["CoreFoundation", "_FoundationICU", "FoundationInternationalization", "FoundationEssentials",
                        "_FoundationCollections", "_FoundationCShims", "stdc++"].flatMap { ["-Xlinker", "-l\($0)"] }

let package = Package(
    name: "Ferry",
    products: [
        .library(name: "FerryCore", targets: ["FerryCore"]),
        .library(name: "FerryNetwork", targets: ["FerryNetwork"]),
        .library(name: "ferry", type: .dynamic, targets: ["FerryC"]),
        .executable(name: "ferry-cli", targets: ["ferry"]),
        .executable(name: "example-digits", targets: ["example-digits"]),
        .executable(name: "example-frames", targets: ["example-frames"]),
        .executable(name: "example-table", targets: ["example-table"]),
        .executable(name: "example-stream", targets: ["example-stream"]),
    ],
    traits: [
        .trait(name: "Network", description: "tcp:// and redis:// transports, the tcp:// gateway, redis:// nodes and Prometheus metrics"),
        .default(enabledTraits: ["Network"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
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
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            // The tests (`@testable import`) run against the release build, so `make test`
            // reuses `make build`'s modules instead of building every dependency again in debug.
            swiftSettings: [.unsafeFlags(["-enable-testing"])]
        ),
        .target(name: "FerryWire", dependencies: ["FerryCore", "CZstd", "CTurboJPEG"]),
        .target(
            name: "FerryTCP",
            dependencies: [
                "FerryCore",
                "FerryWire",
                .product(name: "Atomics", package: "swift-atomics"),
                // For its BoringSSL (CNIOBoringSSL): TLS for the blocking client socket, and
                // SHA-256/HMAC (Digest.swift) without a second BoringSSL from swift-crypto.
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "FerryRedis",
            dependencies: [
                "FerryCore",
                "FerryTCP",
                "CHiredis",
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        .target(name: "FerryNetwork", dependencies: ["FerryCore", "FerryTCP", "FerryRedis"]),
        .target(
            name: "FerryC",
            dependencies: [
                "FerryCore", "CFerryABI", "CFerryLinux",
                .target(name: "FerryNetwork", condition: network),
            ],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib",
                    "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/FerryC/exports.map",
                    "-Xlinker", "-soname=libferry.so.0",
                    // FoundationEssentials (tables, stream statistics) needs
                    // its collections library, which the static link does not pull in by itself.
                    "-Xlinker", "-l_FoundationCollections", "-Xlinker", "-l_FoundationCShims",
                ]),
            ]
        ),
        .target(
            name: "FerryGateway",
            dependencies: [
                "FerryCore",
                "FerryWire",
                "FerryTCP",
                "FerryRedis",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "ferry",
            dependencies: [
                "FerryCore",
                .target(name: "FerryNetwork", condition: network),
                .target(name: "FerryRedis", condition: network),
                .target(name: "FerryGateway", condition: network),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio", condition: network),
                .product(name: "NIOPosix", package: "swift-nio", condition: network),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: network),
                .product(name: "Prometheus", package: "swift-prometheus", condition: network),
            ],
            // Like libferry.so, the command links its Swift runtime (Foundation included)
            // statically: the installed `ferry` runs where no Swift toolchain is. Set here, not
            // with `swift build --static-swift-stdlib`, so that every product builds with the
            // same flags and one build never invalidates another's modules.
            linkerSettings: [.unsafeFlags(["-static-stdlib"] + staticFoundation)]
        ),
        .testTarget(name: "FerryCoreTests", dependencies: ["FerryCore"]),
        .testTarget(name: "FerryGatewayTests", dependencies: ["FerryCore", "FerryNetwork", "FerryWire", "FerryTCP", "FerryRedis", "FerryGateway"]),
        // The Swift clients of examples/ (one per pattern; the other languages sit beside them).
        // They link FerryNetwork where the trait is on, so each also calls tcp:// and redis:// URLs.
        .executableTarget(name: "example-digits", dependencies: ["FerryCore", .target(name: "FerryNetwork", condition: network)], path: "examples/digits/swift"),
        .executableTarget(name: "example-frames", dependencies: ["FerryCore", .target(name: "FerryNetwork", condition: network)], path: "examples/frames/swift"),
        .executableTarget(name: "example-table", dependencies: ["FerryCore", .target(name: "FerryNetwork", condition: network)], path: "examples/table/swift"),
        .executableTarget(name: "example-stream", dependencies: ["FerryCore", .target(name: "FerryNetwork", condition: network)], path: "examples/stream/swift"),
    ]
)
