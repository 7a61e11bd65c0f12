// Schemas of every unlearnx op, declared once. Kernels live in cpu/*.cpp and cuda/*.cu (one
// TORCH_LIBRARY_IMPL per backend), the C++ autograd kernels in autograd.cpp, fake kernels in
// unlearnx/ops/_registrations.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import unlearnx._C` only has to load this library so that the static TORCH_LIBRARY initialisers
// below run; the module itself is empty (no pybind11, ops are reached through torch.ops.unlearnx).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(unlearnx, m) {
  // Public ops (a contract: names and argument order are relied on by other code).
  m.def("bikl_loss(Tensor logits, Tensor target, float reverse_weight) -> Tensor");
  m.def("scl_loss(Tensor forget_logits, Tensor retain_logits, float temperature) -> Tensor");
  m.def("masked_reinit_(Tensor(a!) weight, Tensor scores, float fraction, float std, bool largest, "
        "int? seed) -> Tensor");
  // Internal: forward that also returns the gradient of the loss w.r.t. each input (the softmax is
  // needed by both, so one pass computes both); the backward only scales it by grad_output.
  m.def("_bikl_loss_fwd(Tensor logits, Tensor target, float reverse_weight) -> (Tensor, Tensor)");
  m.def("_bikl_loss_backward(Tensor grad_output, Tensor grad_logits) -> Tensor");
  // grad_forget / grad_retain say which gradients to compute; the others come back as empty [0].
  m.def("_scl_loss_fwd(Tensor forget_logits, Tensor retain_logits, float temperature, bool grad_forget, "
        "bool grad_retain) -> (Tensor, Tensor, Tensor)");
  m.def("_scl_loss_backward(Tensor grad_output, Tensor grad_forget, Tensor grad_retain) -> (Tensor, Tensor)");
}
