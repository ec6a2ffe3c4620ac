// swift-tools-version:6.0
// libFuzzer targets for the message decoder (alone, and while a peer thread rewrites the
// bytes) and the segment-header validation. Built only
// by `make fuzz` (with -sanitize=fuzzer,address), so the main package stays free of them.
// FerryCore, FerryWire and their C shims are symlinks to the main package's sources (a path dependency
// would be named after the folder the repository is cloned into).
import PackageDescription

let package = Package(
    name: "FerryFuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
    ],
    targets: [
        .target(name: "CFerryLinux"),
        .target(name: "CFuzz"),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg"),
        .target(name: "FerryCore", dependencies: [
            "CFerryLinux",
            .product(name: "Atomics", package: "swift-atomics"),
        ]),
        // Frames and compressed tensors (zstd, JPEG): what a tcp:// gateway reads first.
        .target(name: "FerryWire", dependencies: ["FerryCore", "CZstd", "CTurboJPEG"]),
        .executableTarget(name: "FuzzMessage", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzSegment", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzRacing", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzArguments", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzFrames", dependencies: ["FerryCore", "FerryWire", "CFuzz"]),
    ]
)
