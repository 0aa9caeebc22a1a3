// Used by scripts/check_bundle_host.py: the bundle's model on raw int8 inputs.
#include <cstdio>

#include "arena_size.h"
#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

alignas(16) static uint8_t tensor_arena[kTensorArenaSize];

int main(int argc, char** argv) {
  static ModelOpResolver resolver;
  if (!RegisterModelOps(resolver)) return 1;
  static tflite::MicroInterpreter interpreter(tflite::GetModel(g_model_data), resolver,
                                              tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) return 2;
  TfLiteTensor* input = interpreter.input(0);
  for (int a = 1; a < argc; ++a) {
    FILE* f = std::fopen(argv[a], "rb");
    if (f == nullptr) return 3;
    size_t n = std::fread(input->data.int8, 1, input->bytes, f);
    std::fclose(f);
    if (n != input->bytes) return 4;
    if (interpreter.Invoke() != kTfLiteOk) return 5;
    TfLiteTensor* output = interpreter.output(0);
    std::printf("output:");
    for (size_t i = 0; i < output->bytes; ++i) std::printf(" %d", output->data.int8[i]);
    std::printf("\n");
  }
  return 0;
}
