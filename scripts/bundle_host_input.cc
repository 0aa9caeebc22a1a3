// Used by scripts/check_bundle_host.py: test input for main.cc.
#include <cstdio>
#include <cstdlib>
#include <vector>

float read_input_value(int input, int i) {
  (void)input;  // the checked models have one input
  static std::vector<float> values;
  if (values.empty()) {
    const char* path = std::getenv("TINYEXPORT_INPUT_FILE");
    FILE* f = path ? std::fopen(path, "rb") : nullptr;
    if (f == nullptr) { std::fprintf(stderr, "set TINYEXPORT_INPUT_FILE\n"); std::exit(3); }
    float v;
    while (std::fread(&v, sizeof v, 1, f) == 1) values.push_back(v);
    std::fclose(f);
  }
  if (i < 0 || static_cast<size_t>(i) >= values.size()) {
    std::fprintf(stderr, "input file has %zu values, element %d read\n", values.size(), i);
    std::exit(3);
  }
  return values[i];
}
