// swift-tools-version:6.1
// The target graph is the architecture (../shared/STYLE.md "Layout").
import PackageDescription

let nio = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: "swift-nio")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let cryptoExtras = Target.Dependency.product(name: "_CryptoExtras", package: "swift-crypto")
let x509 = Target.Dependency.product(name: "X509", package: "swift-certificates")
let asn1 = Target.Dependency.product(name: "SwiftASN1", package: "swift-asn1")

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
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", exact: "1.37.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", exact: "1.21.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", exact: "1.7.4"),
        .package(url: "https://github.com/apple/swift-http-types.git", exact: "1.8.0"),
        // The host's jobs file (README "Jobs").
        .package(url: "https://github.com/LebJe/TOMLKit.git", exact: "0.6.0"),
        // Metrics exposition for `server run --metrics-listen` (Sources/RedoubtServer/Metrics*.swift).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        // Graceful stops of the listeners the server runs beside its API (BackgroundListener).
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        // The catalog on PostgreSQL for several servers (Sources/RedoubtServer/Postgres).
        .package(url: "https://github.com/vapor/postgres-nio.git", exact: "1.33.2"),
        // Deque, for the client's first-in first-out queues (already built for swift-nio).
        .package(url: "https://github.com/apple/swift-collections.git", exact: "1.6.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // The PKCS#11 header (p11-kit's); modules are dlopen()ed, never linked.
        .systemLibrary(
            name: "CP11Kit",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        // glibc malloc thresholds for executables (mallopt is not visible from Swift).
        .target(name: "CMallocTune"),
        // Linux calls Swift cannot import (variadic ioctl for the immutable flag).
        .target(name: "CRedoubtSys"),
        // SHA-256 hashing two messages in one loop (x86 SHA extensions). Pure.
        .target(name: "CRedoubtHash"),
        // Pure core: formats, crypto, chunking. No files, sockets or clocks.
        .target(name: "RedoubtCore", dependencies: ["CZstd", "CRedoubtHash", crypto, cryptoExtras]),
        // AWS request signing (SigV4) and credential loading, shared by the S3 store and AWS KMS.
        .target(name: "RedoubtAWS", dependencies: ["RedoubtCore", crypto]),
        // Key providers: wrap and unwrap the tenant's read private key.
        .target(name: "RedoubtKMS", dependencies: [
            "RedoubtCore", "RedoubtAWS", "CP11Kit", crypto, cryptoExtras, nio, nioPosix, nioSSL,
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
        // The storage protocol and its implementations. Knows nothing of keys or packs.
        .target(name: "RedoubtStore", dependencies: [
            "CRedoubtSys", "RedoubtCore", "RedoubtAWS", logging, crypto, nio, nioHTTP1, nioSSL,
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
        // The server: API, authn/authz, catalog, retention, audit. Holds no key that decrypts.
        .target(
            name: "RedoubtServer",
            dependencies: [
                "RedoubtCore", "RedoubtStore", "RedoubtMedia", "RedoubtAWS", crypto, x509, asn1, nio, nioPosix, nioSSL, logging,
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // Offline media format (docs/FORMAT.md §13). May import RedoubtCore only.
        .target(name: "RedoubtMedia", dependencies: ["RedoubtCore", "CRedoubtSys", crypto]),
        // The client: archiver, restorer, API client.
        .target(
            name: "RedoubtClient",
            dependencies: [
                "RedoubtCore", "RedoubtKMS", "CRedoubtSys", crypto, x509, nio, nioHTTP1, nioSSL, logging,
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "redoubt",
            dependencies: [
                "RedoubtCore", "RedoubtKMS", "RedoubtStore", "RedoubtServer", "RedoubtClient", "RedoubtMedia", "RedoubtAWS", "CMallocTune", logging, crypto, nioHTTP1,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        // Prints MB/s figures for the core pipeline; see scripts/bench-core.
        .executableTarget(name: "redoubt-bench", dependencies: ["RedoubtCore", "CMallocTune", "CZstd", crypto]),
        .testTarget(name: "RedoubtCoreTests", dependencies: ["RedoubtCore", "RedoubtKMS", "CRedoubtHash"], resources: [.copy("Fixtures")]),
        .testTarget(name: "RedoubtAWSTests", dependencies: ["RedoubtAWS"]),
        .testTarget(name: "RedoubtKMSTests", dependencies: ["RedoubtCore", "RedoubtKMS", "RedoubtAWS"], resources: [.copy("Fixtures")]),
        .testTarget(name: "RedoubtStoreTests", dependencies: ["RedoubtStore", "RedoubtAWS", "RedoubtCore", nio]),
        // Offline media sets: the format, pure; devices and glue come later.
        .testTarget(name: "RedoubtMediaTests", dependencies: ["RedoubtMedia", "RedoubtCore"], resources: [.copy("Fixtures")]),
        .testTarget(name: "RedoubtClientTests", dependencies: ["RedoubtClient", "RedoubtCore", "RedoubtKMS"]),
        .testTarget(name: "RedoubtServerTests", dependencies: ["RedoubtServer", "RedoubtMedia", "RedoubtClient", "RedoubtCore", "RedoubtKMS", "RedoubtAWS", "RedoubtStore", nioHTTP1, crypto, nioPosix, nioSSL,
                                                    .product(name: "Hummingbird", package: "hummingbird"), .product(name: "GRDB", package: "GRDB.swift"),
                                                    .product(name: "PostgresNIO", package: "postgres-nio"), logging],
                    resources: [.copy("Fixtures")]),
    ]
)
