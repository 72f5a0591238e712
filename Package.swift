// swift-tools-version: 6.2
// 6.2: the overlay uses SendableMetatype (Swift 6.2); an older toolchain stops here, saying so.
import PackageDescription

let package = Package(
  name: "Procord",
  products: [
    .library(name: "Procord", targets: ["Procord"]),
    .library(name: "CProcord", targets: ["CProcord"]),
    .executable(name: "procord-demo", targets: ["procord-demo"]),
    .executable(name: "procord-bench", targets: ["procord-bench"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),  // `make docs` only
  ],
  targets: [
    // libevent from the system (Debian: libevent-dev).
    .systemLibrary(
      name: "CLibevent",
      pkgConfig: "libevent_core",
      providers: [.apt(["libevent-dev"])]
    ),
    // The C core, in folders by layer (docs/ARCHITECTURE.md); its public
    // headers are include/procord/, reached through the symlink
    // Sources/CProcord/include. Its files include each other's folder header
    // as "layer/layer_private.h", from the target's root.
    .target(
      name: "CProcord", dependencies: ["CLibevent"],
      cSettings: [
        .headerSearchPath("."),
        // The core's invariants (PROCORD_ASSERT) are checked in debug builds.
        .define("NDEBUG", .when(configuration: .release)),
      ]),
    .target(
      name: "Procord",
      dependencies: [
        "CProcord", .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
      ]
    ),
    .executableTarget(name: "procord-demo", dependencies: ["Procord"]),
    // The benchmark: its floors (ping-pong, bandwidth, bare starts) and the
    // C API's own round trip are measured in C.
    .target(name: "CProcordBench", dependencies: ["CProcord"]),
    .executableTarget(
      name: "procord-bench",
      dependencies: [
        "Procord", "CProcord", "CProcordBench",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Histogram", package: "hdrhistogram-swift"),
      ]
    ),
    // The README's example, compiled as it is printed there.
    .executableTarget(
      name: "procord-example", dependencies: ["Procord"], path: "Examples/GettingStarted"),
    // The README's pool example, compiled as it is printed there.
    .executableTarget(name: "procord-pool-example", dependencies: ["Procord"], path: "Examples/Pool"),
    // The README's example of the fast paths for many small tasks.
    .executableTarget(
      name: "procord-many-tasks-example", dependencies: ["Procord"], path: "Examples/ManySmallTasks"),
    // Codable input, output and error, a deadline and cancellation, with Worker.main.
    .executableTarget(
      name: "procord-codable-example", dependencies: ["Procord"], path: "Examples/CodableTasks"),
    // A worker server, and a main program that sends it tasks.
    .executableTarget(
      name: "procord-server-example", dependencies: ["Procord"], path: "Examples/WorkerServer"),
    // A worker that misbehaves on purpose, for the tests.
    .executableTarget(
      name: "procord-test-worker",
      dependencies: ["Procord", .product(name: "CoreMetrics", package: "swift-metrics")],
      path: "Tests/TestWorker"),
    .target(name: "CTestSupport", path: "Tests/CTestSupport"),
    .testTarget(
      name: "ProcordTests",
      dependencies: [
        "Procord", "CTestSupport", "procord-demo", "procord-test-worker", "procord-example",
        "procord-pool-example", "procord-many-tasks-example", "procord-codable-example",
        "procord-server-example", "procord-bench", "CProcordBench",
      ]
    ),
  ]
)
