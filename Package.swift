// swift-tools-version:6.1
// The target graph is the architecture (docs/FORMAT.md §1, ../shared/STYLE.md "Layout").
import PackageDescription

let package = Package(
    name: "redoubt",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "redoubt", targets: ["redoubt"]),
        .library(name: "RedoubtCore", targets: ["RedoubtCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // glibc malloc thresholds for executables (mallopt is not visible from Swift).
        .target(name: "CMallocTune"),
        // Pure core: formats, crypto, chunking. No files, sockets or clocks.
        .target(
            name: "RedoubtCore",
            dependencies: [
                "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // Key providers: wrap and unwrap the tenant's read private key.
        .target(
            name: "RedoubtKMS",
            dependencies: [
                "RedoubtCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "redoubt",
            dependencies: [
                "RedoubtCore",
                "RedoubtKMS",
                "CMallocTune",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Prints MB/s figures for the core pipeline; see scripts/bench-core.
        .executableTarget(
            name: "redoubt-bench",
            dependencies: [
                "RedoubtCore",
                "CMallocTune",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "RedoubtCoreTests",
            dependencies: ["RedoubtCore", "RedoubtKMS"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "RedoubtKMSTests",
            dependencies: ["RedoubtCore", "RedoubtKMS"]
        ),
    ]
)
