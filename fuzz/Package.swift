// swift-tools-version:6.0
// libFuzzer targets for the message decoder (alone, and while a peer thread rewrites the
// bytes) and the segment-header validation. Built only
// by `make fuzz` (with -sanitize=fuzzer,address), so the main package stays free of them.
// FerryCore and its C shim are symlinks to the main package's sources (a path dependency
// would be named after the folder the repository is cloned into).
import PackageDescription

let package = Package(
    name: "FerryFuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        .target(name: "CFerryLinux"),
        .target(name: "CFuzz"),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg"),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis"),
        .target(name: "FerryCore", dependencies: [
            "CFerryLinux",
            "CZstd",
            "CTurboJPEG",
            "CHiredis",
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        .executableTarget(name: "FuzzMessage", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzSegment", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzRacing", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzArguments", dependencies: ["FerryCore", "CFuzz"]),
        .executableTarget(name: "FuzzFrames", dependencies: ["FerryCore", "CFuzz"]),
    ]
)
