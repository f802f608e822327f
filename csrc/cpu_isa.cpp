// lrm_fast::cpu_isa(str? cap) -> str: the CPU build the kernels run (cpu_isa.h). With cap
// ("avx512" or "native", "avx2", "plain") it first sets the in-process cap; None only reports.
// No tensor arguments, so it is defined with its kernel (a catch-all) in a library fragment.
#include <c10/util/Exception.h>
#include <optional>
#include <torch/library.h>

#include <string>

#include "cpu_isa.h"

namespace lrm_fast {

std::string cpu_isa_op(std::optional<std::string> want) {
  if (want.has_value()) {
    const int c = cpu_isa::parse(want->c_str());
    TORCH_CHECK(c >= 0, "cpu_isa: unknown instruction set '", *want, "' (avx512, native, avx2, plain)");
    cpu_isa::cap().store(c);
  }
  return cpu_isa::name(cpu_isa::current());
}

TORCH_LIBRARY_FRAGMENT(lrm_fast, m) {
  m.def("cpu_isa(str? cap=None) -> str", &cpu_isa_op);
}

}  // namespace lrm_fast
