// tinyexport's product image (firmware_eval/emulate_build.py): the bundle's model as an application
// links it, to measure its flash. It only initialises the model and invokes it: no printing, no
// semihosting, no test inputs (scripts/build_bundle_cortex_m.sh links it with newlib-nano and
// nosys). Not run: the emulator's run image (emu_driver.cc) measures outputs, arena and stack.
#include <cstddef>
#include <cstdint>
#include <new>

#include "arena_size.h"
#include "model_data.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

alignas(16) static uint8_t tensor_arena[kTensorArenaSize];
alignas(tflite::MicroInterpreter) static uint8_t storage[sizeof(tflite::MicroInterpreter)];
static ModelOpResolver resolver;
volatile int8_t g_product_output;  // the application's use of the result (keeps Invoke linked)

int main() {
  if (!RegisterModelOps(resolver)) return 1;
  auto* interpreter = new (storage) tflite::MicroInterpreter(
      tflite::GetModel(g_model_data), resolver, tensor_arena, kTensorArenaSize);
  if (interpreter->AllocateTensors() != kTfLiteOk) return 1;
  TfLiteTensor* input = interpreter->input(0);
  for (size_t i = 0; i < input->bytes; ++i) input->data.int8[i] = 0;  // the sensor's data here
  if (interpreter->Invoke() != kTfLiteOk) return 1;
  g_product_output = interpreter->output(0)->data.int8[0];
  return 0;
}
