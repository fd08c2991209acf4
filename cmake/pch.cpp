// Precompiled header carrier for the examples, benchmarks and link test (see CMakeLists.txt).
