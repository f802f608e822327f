// The op table of lrm_fast._C: schemas only (kernels register themselves per device in
// *_cpu.cpp / *_cuda.cu). Registered with torch.library so torch.compile and opcheck see the
// ops; Python adds fake (meta) kernels and autograd in lrm_fast/ops/{raymarch,composite}.py.
#include <Python.h>
#include <torch/library.h>

// An importable, empty Python module: importing lrm_fast._C loads this library, whose static
// initializers register the ops under torch.ops.lrm_fast.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(lrm_fast, m) {
  // rays
  m.def("generate_rays(Tensor c2w, Tensor intrinsics, int height, int width, Tensor? pixels) -> (Tensor, Tensor)");
  m.def("ray_box(Tensor origins, Tensor dirs, float box_min, float box_max) -> (Tensor, Tensor, Tensor)");
  // samples
  m.def("stratified(Tensor near, Tensor far, int n, Tensor? u) -> Tensor");
  m.def("importance(Tensor depths, Tensor weights, int n, Tensor? u) -> Tensor");
  // sample points o + t * d of each ray: origins, dirs [R, 3], depths [R, S] -> [R, S, 3]
  m.def("ray_points(Tensor origins, Tensor dirs, Tensor depths) -> Tensor");
  // stable merge of two sorted sample sets (coarse + fine) with K values per sample
  m.def("merge_samples(Tensor t_a, Tensor v_a, Tensor t_b, Tensor v_b) -> (Tensor, Tensor)");
  m.def("merge_samples_bwd(Tensor v_v, Tensor t_a, Tensor t_b) -> (Tensor, Tensor)");
  // compositing: forward returns (color, depth, opacity, t_final, n_used); the last two are what
  // the O(rays) backward needs besides the inputs
  m.def("composite_fwd(Tensor rgb, Tensor sigma, Tensor deltas, Tensor depths, Tensor background, "
        "float thresh) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("composite_bwd(Tensor v_color, Tensor v_depth, Tensor v_opacity, Tensor rgb, Tensor sigma, "
        "Tensor deltas, Tensor depths, Tensor background, Tensor depth, Tensor opacity, Tensor t_final, "
        "Tensor n_used) -> (Tensor, Tensor, Tensor)");
  m.def("composite_weights(Tensor sigma, Tensor deltas) -> Tensor");
  // fused: raw field samples [R, S, 4] at sorted depths [R, S] -> gate, activations, midpoint
  // intervals and compositing in one pass (csrc/composite_samples.h); act: 0 softplus, 1 exp
  m.def("composite_samples_fwd(Tensor raw, Tensor t, Tensor origins, Tensor dirs, Tensor background, "
        "float box_min, float box_max, float bias, int act, bool midpoint, float thresh) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("composite_samples_bwd(Tensor v_color, Tensor v_depth, Tensor v_opacity, Tensor raw, Tensor t, "
        "Tensor origins, Tensor dirs, Tensor background, float box_min, float box_max, float bias, int act, "
        "bool midpoint, Tensor depth, Tensor opacity, Tensor t_final, Tensor n_used) -> (Tensor, Tensor)");
  m.def("composite_samples_weights(Tensor raw, Tensor t, Tensor origins, Tensor dirs, float box_min, "
        "float box_max, float bias, int act, bool midpoint) -> Tensor");
  // packed (ragged) samples for empty-space skipping (csrc/occupancy_ops.h): raw [N, 4], t [N], ray i owns
  // samples offsets[i] .. offsets[i + 1] - 1 (offsets [R + 1] int64); otherwise as composite_samples_*
  m.def("composite_samples_packed_fwd(Tensor raw, Tensor t, Tensor offsets, Tensor origins, Tensor dirs, "
        "Tensor background, float box_min, float box_max, float bias, int act, bool midpoint, float thresh) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("composite_samples_packed_bwd(Tensor v_color, Tensor v_depth, Tensor v_opacity, Tensor raw, Tensor t, "
        "Tensor offsets, Tensor origins, Tensor dirs, Tensor background, float box_min, float box_max, float bias, "
        "int act, bool midpoint, Tensor depth, Tensor opacity, Tensor t_final, Tensor n_used) -> (Tensor, Tensor)");
  m.def("composite_samples_packed_weights(Tensor raw, Tensor t, Tensor offsets, Tensor origins, Tensor dirs, "
        "float box_min, float box_max, float bias, int act, bool midpoint) -> Tensor");
  // empty-space skipping, per ray (csrc/occupancy.h): grid [B, G, G, G] bool, rays grouped by item
  m.def("occupancy_mark(Tensor origins, Tensor dirs, Tensor t, Tensor grid, int rays_per_item, float box_min, "
        "float box_max) -> (Tensor, Tensor, Tensor)");
  // n, n_need: the packed totals offsets[R], offsets_need[R] when the caller has them (-1: the kernel
  // reads them, on CUDA a host sync each; csrc/occupancy_ops.h packed_total)
  m.def("occupancy_pack(Tensor origins, Tensor dirs, Tensor t, Tensor keep, Tensor offsets, SymInt n=-1) "
        "-> (Tensor, Tensor)");
  m.def("occupancy_unpack(Tensor values, Tensor keep, Tensor offsets) -> Tensor");
  m.def("occupancy_merge(Tensor origins, Tensor dirs, Tensor t_c, Tensor occ_c, Tensor keep_c, Tensor offsets_c, "
        "Tensor t_f, Tensor grid, int rays_per_item, float box_min, float box_max) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("occupancy_gather(Tensor origins, Tensor dirs, Tensor t, Tensor keep, Tensor src, Tensor offsets, "
        "Tensor offsets_need, Tensor raw_c, SymInt n=-1, SymInt n_need=-1) -> (Tensor, Tensor, Tensor, Tensor)");
  // fused triplane field (CPU; the CUDA path is the Triton kernel): planes [B, 3, C, H, W], points
  // [B, N, 3], MLP weights [out, in] / biases [out] (zeros for no bias) -> raw outputs [B, N, out];
  // aggregate: 0 concat, 1 sum, 2 mean; activation: 0 relu, 1 silu, 2 softplus
  m.def("triplane_mlp_fwd(Tensor planes, Tensor points, Tensor[] weights, Tensor[] biases, int aggregate, "
        "int activation) -> Tensor");
  // its backward (recomputes the forward per block; nothing but the inputs is saved): v_out
  // [B, N, out] -> (v_planes [B, 3, C, H, W], v_weights, v_biases); the points get no gradient
  m.def("triplane_mlp_bwd(Tensor v_out, Tensor planes, Tensor points, Tensor[] weights, Tensor[] biases, "
        "int aggregate, int activation) -> (Tensor, Tensor[], Tensor[])");
}
