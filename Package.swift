// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "custos",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "custos", targets: ["custos"]),
        .executable(name: "custos-bench", targets: ["custos-bench"]),
        .library(name: "PKCS11", targets: ["PKCS11"]),
        .library(name: "HSM", targets: ["HSM"]),
        .library(name: "Custody", targets: ["Custody"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", exact: "1.33.2"),
        // RPC (DESIGN §10): grpc-swift 2, its NIO HTTP/2 transport and protobuf support.
        .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", exact: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", exact: "1.7.4"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
    ],
    targets: [
        // p11-kit's pkcs11.h and dlfcn, nothing else: only `PKCS11` imports it.
        .systemLibrary(name: "CPKCS11", pkgConfig: "p11-kit-1", providers: [.apt(["libp11-kit-dev"])]),
        // The leaf every layer may use: secret bytes (locked, wiped, redacted), the one memory
        // wipe, the one hex encoder/decoder and process hygiene. Nothing but the C library.
        .target(
            name: "SecureMemory",
            dependencies: ["CSystemShims"],
            swiftSettings: strict
        ),
        .target(
            name: "PKCS11",
            dependencies: ["CPKCS11", "SecureMemory"],
            swiftSettings: strict
        ),
        .target(
            name: "HSM",
            dependencies: [
                "PKCS11", "SecureMemory",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // prctl wrappers (variadic C does not import): core-dump suppression (SecureMemory's
        // ProcessHygiene, so that the service and the key ceremony share it).
        .systemLibrary(name: "CSystemShims"),
        // Shared value types, no logic with dependencies.
        .target(name: "CustosModel", dependencies: ["SecureMemory"], swiftSettings: strict),
        .target(
            name: "Storage",
            dependencies: [
                "CustosModel",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Custody",
            dependencies: [
                "CustosModel", "HSM", "PKCS11", "SecureMemory", "Storage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Face embeddings in, keyed one-way tokens out (DESIGN §6).
        .target(
            name: "Tokenization",
            dependencies: [
                "CustosModel", "HSM", "SecureMemory", "Custody", "Storage",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Research and measurement, never linked into the `custos` executable: synthetic and
        // labelled embeddings, the DET/unlinkability metrics, and the fixed evaluation keys
        // (so a production build cannot tokenize with them).
        .target(
            name: "TokenizationEvaluation",
            dependencies: [
                "CustosModel", "HSM", "SecureMemory", "Tokenization",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // The key ceremony (DESIGN §11): Shamir shares of the root keys, share files, the signed
        // transcript, restore and root-KEK rotation. Talks to the HSM directly.
        // CryptoExtras (same swift-crypto package) only for the single-block AES of the AES KCV.
        .target(
            name: "Ceremony",
            dependencies: [
                "CustosModel", "HSM", "PKCS11", "SecureMemory", "Custody", "Storage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The verification core: only ever sees tokens. Never imports HSM, PKCS11, Tokenization
        // or Custody (DESIGN §2.3; scripts/check-imports fails on it); what it needs from custody
        // it declares as protocols.
        .target(
            name: "Verification",
            dependencies: [
                "CustosModel", "Storage",
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Wires custody into the verification core's ports, and features → tokens → decisions.
        .target(
            name: "Composition",
            dependencies: [
                "CustosModel", "HSM", "PKCS11", "SecureMemory", "Custody", "Storage", "Tokenization", "Verification",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The internal RPC: generated code from proto/ (scripts/gen-proto; committed, never
        // generated during a build), the handlers, authentication, status mapping, the
        // grpc.health.v1 service and the server with its /metrics endpoint.
        .target(
            name: "RPC",
            dependencies: [
                "CustosModel", "HSM", "SecureMemory", "Custody", "Storage", "Tokenization", "Verification", "Composition",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // What both executables' commands share: local options and configuration lookup, output
        // format, logging to standard error, local errors.
        .target(
            name: "CustosCommandLine",
            dependencies: [
                "Composition", "CustosModel", "PKCS11",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "custos",
            dependencies: [
                "HSM",
                "PKCS11",
                "SecureMemory",
                "Custody",
                "Storage",
                "CustosModel",
                "Tokenization",
                "Verification",
                "Composition",
                "CustosCommandLine",
                "Ceremony",
                "RPC",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // Benchmarks and the biometric evaluation (fixed test keys), apart from the production
        // executable; they start Custos through the same runtime (Composition.CustosRuntime).
        .executableTarget(
            name: "custos-bench",
            dependencies: [
                "HSM",
                "PKCS11",
                "SecureMemory",
                "Custody",
                "Storage",
                "CustosModel",
                "Tokenization",
                "TokenizationEvaluation",
                "Verification",
                "Composition",
                "CustosCommandLine",
                "RPC",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // Creates throw-away SoftHSM tokens for the test suites; not a mock: every call is real.
        .target(
            name: "HSMTestSupport",
            dependencies: ["PKCS11", "HSM", "SecureMemory", .product(name: "Logging", package: "swift-log")],
            path: "Tests/HSMTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "PKCS11Tests",
            dependencies: ["PKCS11", "HSM", "SecureMemory", "HSMTestSupport", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // Everything that needs PostgreSQL as well as a token: the key hierarchy, API keys,
        // webhooks, audit, the verification flows, storage, the RPC services and the runtime,
        // one folder per feature; harnesses in Support/.
        .testTarget(
            name: "PostgresIntegrationTests",
            dependencies: [
                "Custody", "Storage", "CustosModel", "HSM", "PKCS11", "SecureMemory", "HSMTestSupport", "Tokenization", "Verification", "Composition", "Ceremony", "RPC",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "TokenizationTests",
            dependencies: [
                "Tokenization", "TokenizationEvaluation", "CustosModel", "HSM", "SecureMemory", "HSMTestSupport",
                "Verification",  // RealisticProfileTests: the default decision thresholds against their derivation
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CeremonyTests",
            dependencies: [
                "Ceremony", "HSM", "PKCS11", "SecureMemory", "HSMTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VerificationTests",
            dependencies: ["Verification", "CustosModel"],
            swiftSettings: strict
        ),
        // Real servers and clients over loopback, no database: health, mutual TLS, lifecycle, limits.
        .testTarget(
            name: "RPCTests",
            dependencies: [
                "RPC", "CustosModel", "HSMTestSupport",
                // StatusMappingTests builds each module's errors.
                "Custody", "HSM", "PKCS11", "Storage", "Tokenization", "Verification",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "HSMTests",
            dependencies: [
                "HSM", "PKCS11", "SecureMemory", "HSMTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The leaf alone: hex, the wipe, secret bytes. No token, no database.
        .testTarget(name: "SecureMemoryTests", dependencies: ["SecureMemory"], swiftSettings: strict),
    ]
)
