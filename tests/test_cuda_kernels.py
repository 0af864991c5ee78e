"""The Triton kernels of order_embedding.kernels.cuda and the CUDA dispatch, checked against NumPy.

By default they run on CPU tensors through Triton's interpreter, switched on by
TRITON_INTERPRET=1, which must be set before Triton is imported, so the kernels run in
a child process; this process builds the inputs and the independent NumPy references.
With ORDER_EMBEDDING_TEST_DEVICE=cuda the child runs them on the GPU itself, the
interpreter off (benchmarks/gpu_check.py does so).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import order_penalty

pytest.importorskip("triton")

from order_embedding.kernels import cuda as cuda_kernels  # noqa: E402

#: Where the child processes run the kernels: "cpu" (Triton's interpreter) or "cuda" (the GPU).
DEVICE = os.environ.get("ORDER_EMBEDDING_TEST_DEVICE", "cpu")
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("ORDER_EMBEDDING_TEST_DEVICE=cuda but torch sees no CUDA device", allow_module_level=True)


def child_env() -> dict[str, str]:
    """The environment of a child that runs the kernels on DEVICE."""
    return dict(os.environ, TRITON_INTERPRET="1" if DEVICE == "cpu" else "0", OMP_NUM_THREADS="1",
                ORDER_EMBEDDING_TEST_DEVICE=DEVICE)

RUN_KERNELS = r"""
import os, sys
import numpy as np
import torch
from order_embedding.kernels import cuda as ck

torch.set_num_threads(1)
inp = dict(np.load(sys.argv[1]))
out = {}
DEVICE = os.environ["ORDER_EMBEDDING_TEST_DEVICE"]
def t(a):
    return torch.from_numpy(a).to(DEVICE)

s, im = inp["s"], inp["im"]
out["e_float32"] = ck.order_error_matrix_cuda(t(s), t(im)).cpu().numpy()
out["e_float16"] = ck.order_error_matrix_cuda(t(s.astype(np.float16)), t(im.astype(np.float16))).cpu().numpy()
out["e_mixed"] = ck.order_error_matrix_cuda(t(s.astype(np.float16)), t(im)).cpu().numpy()
sb, imb = t(s).to(torch.bfloat16), t(im).to(torch.bfloat16)
out["bf16_s"], out["bf16_im"] = sb.float().cpu().numpy(), imb.float().cpu().numpy()
out["e_bfloat16"] = ck.order_error_matrix_cuda(sb, imb).cpu().numpy()
out["e_strided"] = ck.order_error_matrix_cuda(t(np.ascontiguousarray(s.T)).t(), t(np.ascontiguousarray(im.T)).t()).cpu().numpy()
out["e_hand"] = ck.order_error_matrix_cuda(t(inp["hand_s"]), t(inp["hand_im"])).cpu().numpy()
out["e_nan"] = ck.order_error_matrix_cuda(t(inp["nan_s"]), t(inp["nan_im"])).cpu().numpy()
out["e_no_dim"] = ck.order_error_matrix_cuda(torch.ones(3, 0, device=DEVICE), torch.ones(4, 0, device=DEVICE)).cpu().numpy()
out["e_no_images"] = ck.order_error_matrix_cuda(torch.ones(3, 5, device=DEVICE), torch.ones(0, 5, device=DEVICE)).cpu().numpy()

qs, qi = inp["grid_s"], inp["grid_im"]
ck.TOPK_BUFFER_BYTES = 1  # one panel of captions per chunk: several chunks
for c, config in enumerate(ck.CONFIGS):
    ck.FIXED_CONFIG = dict(config)
    out[f"config{c}_e"] = ck.order_error_matrix_cuda(t(s), t(im)).cpu().numpy()
    err, idx = ck.order_topk_cuda(t(qs), t(qi), 7, block=100)
    out[f"config{c}_topk_err"], out[f"config{c}_topk_idx"] = err.cpu().numpy(), idx.cpu().numpy()
ck.FIXED_CONFIG = None
err, idx = ck.order_topk_cuda(t(qs[:6]).half(), t(qi).half(), 1000)
out["all_err"], out["all_idx"] = err.cpu().numpy(), idx.cpu().numpy()
err, idx = ck.order_topk_cuda(t(qs[:4, :0]), t(qi[:, :0]), 3)
out["no_dim_err"], out["no_dim_idx"] = err.cpu().numpy(), idx.cpu().numpy()
np.savez(sys.argv[2], **out)
"""

RUN_DISPATCH = r"""
import json, os, sys
from pathlib import Path
import numpy as np
import torch
from order_embedding import evaluation, measures
from order_embedding.index import Index, build_index
from order_embedding.kernels import cuda as ck, gpu
sys.path.insert(0, sys.argv[5])
from test_index import make_run

torch.set_num_threads(1)
inp = dict(np.load(sys.argv[1]))
out, ran = {}, []
DEVICE = os.environ["ORDER_EMBEDDING_TEST_DEVICE"]
def t(a):
    return torch.from_numpy(a).to(DEVICE)
if DEVICE == "cpu":
    # The fake device check: these CPU tensors count as CUDA ones, so the CUDA branch runs through the interpreter.
    gpu.on_cuda = lambda *xs: True
for name in ("order_errors",):
    real = getattr(gpu, name)
    def record(s, im, path, real=real):
        ran.append(path)
        return real(s, im, path)
    setattr(gpu, name, record)

s, im, w = inp["s"], inp["im"], inp["w"]
out["grad_s"], out["grad_im"] = (x.cpu().numpy() for x in ck.order_error_grads_cuda(t(s), t(im), t(w)))
out["grad_s_t"], out["grad_im_t"] = (x.cpu().numpy() for x in ck.order_error_grads_cuda(t(s), t(im), t(np.ascontiguousarray(w.T)).t()))
out["nan_grad_s"], out["nan_grad_im"] = (x.cpu().numpy() for x in ck.order_error_grads_cuda(t(inp["grad_nan_s"]), t(im), t(w)))
paths = {}
for path in gpu.TRAINING_PATHS:
    gpu.use_training_path(path)
    ran.clear()
    S, I = t(s).clone().requires_grad_(), t(im).clone().requires_grad_()
    e = measures.order_errors(S, I)
    (e * t(w)).sum().backward()
    out[f"{path}_e"], out[f"{path}_gs"], out[f"{path}_gi"] = e.detach().cpu().numpy(), S.grad.cpu().numpy(), I.grad.cpu().numpy()
    paths[path] = list(ran)
ran.clear()
with torch.no_grad():
    out["nograd_e"] = measures.order_errors(t(s), t(im)).cpu().numpy()
paths["no_grad"] = list(ran)
gpu.use_training_path("triton")
ran.clear()
out["f16_grad_e"] = measures.order_errors(t(s).half().requires_grad_(), t(im).half()).detach().float().cpu().numpy()
paths["float16_training"] = list(ran)

qs, qi = t(inp["grid_s"]), t(inp["grid_im"])
for name, images in (("tensor", qi), ("packed", ck.pack(qi)), ("blocks", gpu.host_blocks(inp["grid_im"], qs.device, 64))):
    e, i = gpu.device_topk(qs, images, 7, measures.order_errors, block=50)
    out[f"order_{name}_err"], out[f"order_{name}_idx"] = e.cpu().numpy(), i.cpu().numpy()
e, i = gpu.device_topk(qs, qi, 7, measures.cosine_errors, block=50)
out["cosine_err"], out["cosine_idx"] = e.cpu().numpy(), i.cpu().numpy()
e, i = gpu.device_topk(qs, gpu.host_blocks(inp["grid_im"].astype(np.float16), qs.device, 64), 7, measures.cosine_errors)
out["cosine16_err"], out["cosine16_idx"] = e.cpu().numpy(), i.cpu().numpy()

c = inp["cap2img"]
evaluation.BLOCK_ELEMENTS = 500  # several row and column blocks
cpu = evaluation.embedding_ranks(inp["grid_s"], inp["eval_im"], c, measures.order_errors)
dev = evaluation.embedding_ranks(qs, t(inp["eval_im"]), c, measures.order_errors, block_elements=500)
out["eval_cpu_t2i"], out["eval_cpu_i2t"], out["eval_dev_t2i"], out["eval_dev_i2t"] = *cpu, *dev
for side, (s_, im_) in (("cpu", (inp["grid_s"], inp["eval_im"])), ("dev", (qs, t(inp["eval_im"])))):
    lists = evaluation.retrieval_lists(s_, im_, c, "order", k=7, block_elements=500)
    for direction in ("t2i", "i2t"):
        for key in ("ranks", "top", "errors"):
            out[f"lists_{side}_{direction}_{key}"] = lists[direction][key]

root = Path(sys.argv[3])
run = make_run(root / "run")
built = build_index(run, inp["features"], root / "idx", dtype="float16")
index = Index(built)
if DEVICE == "cpu":
    torch.cuda.mem_get_info = lambda device=None: (1 << 40, 1 << 40)
held = index.on_device(DEVICE)
out["held_packed"] = np.array(gpu.is_packed(held))
q = np.load(sys.argv[4])
e, i = gpu.device_topk(t(q), held, 5, measures.order_errors)
out["index_dev_err"], out["index_dev_idx"] = e.cpu().numpy(), i.cpu().numpy()
out["index_cpu_err"], out["index_cpu_idx"] = index.search_vectors(q, 5, bounds=False)
torch.cuda.mem_get_info = lambda device=None: (1000, 1 << 40)
index._held = None
out["held_small"] = np.array(index.on_device(DEVICE) is None)
np.savez(sys.argv[2], **out)
print(json.dumps(paths))
"""

WITHOUT_TRITON = r"""
import json, sys
sys.modules["triton"] = None  # importing triton now fails
import torch
import order_embedding
from order_embedding import kernels
from order_embedding.kernels import cuda as cuda_kernels
try:
    cuda_kernels.order_error_matrix_cuda(torch.ones(2, 3), torch.ones(2, 3))
    message = None
except RuntimeError as error:
    message = str(error)
print(json.dumps({"available": cuda_kernels.available(), "message": message}))
"""


def reference(s: np.ndarray, im: np.ndarray) -> np.ndarray:
    """The penalty matrix by direct broadcasting in float64."""
    return order_penalty(s, im)


def reference_topk(s: np.ndarray, im: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k smallest errors per row in ascending error, ties by lower index, NaN as +inf (exact for grid inputs)."""
    e = reference(s, im)
    e[np.isnan(e)] = np.inf
    index = np.broadcast_to(np.arange(e.shape[1]), e.shape)
    order = np.lexsort((index, e), axis=1)[:, :k]
    return np.take_along_axis(e, order, 1), order


def grid_values(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Multiples of 1/4 in [-2, 2]: every error of 12-dim rows is exact in float16 inputs and float32 sums."""
    return (rng.integers(-8, 9, shape) / 4).astype(np.float32)


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    s = rng.standard_normal((37, 70)).astype(np.float32)
    im = rng.standard_normal((23, 70)).astype(np.float32)
    nan_s, nan_im = s[:9].copy(), im[:11].copy()
    nan_s[2, 5] = np.nan
    nan_im[4, 69] = np.nan
    grid_s = grid_values(rng, (260, 12))
    # Images repeat a few distinct rows, so many errors tie within and across blocks.
    grid_im = grid_values(rng, (40, 12))[rng.integers(0, 40, 300)]
    grid_s[[3, 150], [0, 11]] = np.nan
    grid_im[[7, 200], [5, 2]] = np.nan
    return {
        "s": s, "im": im, "nan_s": nan_s, "nan_im": nan_im, "grid_s": grid_s, "grid_im": grid_im,
        # Hand-made: E = [[2, 0, 4], [0, 0, 0], [9, 4, 1]] (worked out below).
        "hand_s": np.array([[1, 2], [0, 0], [3, -1]], dtype=np.float32),
        "hand_im": np.array([[0, 1], [1, 2], [2, 0]], dtype=np.float32),
    }


@pytest.fixture(scope="module")
def results(inputs: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("cuda_kernels")
    np.savez(folder / "inputs.npz", **inputs)
    env = child_env()
    run = subprocess.run([sys.executable, "-c", RUN_KERNELS, str(folder / "inputs.npz"), str(folder / "out.npz")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(np.load(folder / "out.npz"))


def test_error_matrix_matches_numpy_float32(inputs, results):
    e = results["e_float32"]
    assert e.dtype == np.float32 and e.shape == (37, 23)
    ref = reference(inputs["s"], inputs["im"])
    np.testing.assert_allclose(e, ref, rtol=2e-5, atol=2e-6 * ref.max())


def test_error_matrix_matches_numpy_half_inputs(inputs, results):
    s16, im16 = inputs["s"].astype(np.float16), inputs["im"].astype(np.float16)
    for key, s, im in (("e_float16", s16, im16), ("e_mixed", s16, inputs["im"]),
                       ("e_bfloat16", results["bf16_s"], results["bf16_im"])):
        ref = reference(s, im)
        assert results[key].dtype == np.float32
        np.testing.assert_allclose(results[key], ref, rtol=2e-5, atol=2e-6 * ref.max(), err_msg=key)
    # The half inputs really differ from float32 ones, so the checks above see the conversion.
    assert np.abs(results["e_float16"] - results["e_float32"]).max() > 1e-4


def test_error_matrix_any_layout(inputs, results):
    np.testing.assert_array_equal(results["e_strided"], results["e_float32"])


def test_error_matrix_hand_made(results):
    # s0 = (1, 2): vs (0, 1) 1 + 1; vs (1, 2) 0; vs (2, 0) 0 + 4.  s1 = 0 is below everything.
    # s2 = (3, -1): vs (0, 1) 9 + 0; vs (1, 2) 4 + 0; vs (2, 0) 1 + 0.
    np.testing.assert_array_equal(results["e_hand"], [[2, 0, 4], [0, 0, 0], [9, 4, 1]])


def test_error_matrix_nan(inputs, results):
    e = results["e_nan"]
    nan = np.zeros(e.shape, dtype=bool)
    nan[2, :] = True
    nan[:, 4] = True
    np.testing.assert_array_equal(np.isnan(e), nan)
    ref = reference(inputs["nan_s"], inputs["nan_im"])
    np.testing.assert_allclose(e[~nan], ref[~nan], rtol=2e-5, atol=2e-6 * ref[~nan].max())


def test_error_matrix_empty_shapes(results):
    np.testing.assert_array_equal(results["e_no_dim"], np.zeros((3, 4)))
    assert results["e_no_images"].shape == (3, 0)


def test_every_autotune_config_computes_the_same(inputs, results):
    ref = reference(inputs["s"], inputs["im"])
    for c in range(len(cuda_kernels.CONFIGS)):
        np.testing.assert_allclose(results[f"config{c}_e"], ref, rtol=2e-5, atol=2e-6 * ref.max(),
                                   err_msg=f"config {c}")


def test_topk_ties_by_lower_index_and_nan_as_inf(inputs, results):
    ref_err, ref_idx = reference_topk(inputs["grid_s"], inputs["grid_im"], 7)
    # The data really has ties inside the top 7 and NaN rows.
    assert (ref_err[:, 1:] == ref_err[:, :-1])[np.isfinite(ref_err[:, 1:])].any()
    assert np.isinf(ref_err[3]).all() and np.isinf(ref_err[150]).all()
    for c in range(len(cuda_kernels.CONFIGS)):
        err, idx = results[f"config{c}_topk_err"], results[f"config{c}_topk_idx"]
        assert err.dtype == np.float32 and idx.dtype == np.int64 and err.shape == (260, 7)
        np.testing.assert_array_equal(idx, ref_idx, err_msg=f"config {c}")
        np.testing.assert_array_equal(err, ref_err, err_msg=f"config {c}")
    # A NaN caption has only +inf errors: the first 7 images in index order.
    np.testing.assert_array_equal(results["config0_topk_idx"][3], np.arange(7))
    # NaN images are never chosen while finite errors remain.
    assert not np.isin(results["config0_topk_idx"][np.isfinite(ref_err).all(1)], [7, 200]).any()


def test_topk_k_beyond_images_sorts_all(inputs, results):
    s16 = inputs["grid_s"][:6].astype(np.float16)
    ref_err, ref_idx = reference_topk(s16, inputs["grid_im"].astype(np.float16), 300)
    assert results["all_idx"].shape == (6, 300)
    np.testing.assert_array_equal(results["all_idx"], ref_idx)
    np.testing.assert_array_equal(results["all_err"], ref_err)


def test_topk_zero_dimension(results):
    np.testing.assert_array_equal(results["no_dim_err"], np.zeros((4, 3)))
    np.testing.assert_array_equal(results["no_dim_idx"], np.tile(np.arange(3), (4, 1)))


@pytest.mark.parametrize("s, im, message", [
    (torch.ones(3, 4), torch.ones(2, 5), "dimension 4 but images have dimension 5"),
    (torch.ones(3, 4, 1), torch.ones(2, 4), "2-D matrix"),
    (torch.ones(3, 4, dtype=torch.int32), torch.ones(2, 4), "float16, bfloat16 or float32"),
    (np.ones((3, 4), dtype=np.float32), torch.ones(2, 4), "torch.Tensor"),
])
def test_bad_inputs_raise_one_line_errors(s, im, message):
    for call in (lambda: cuda_kernels.order_error_matrix_cuda(s, im), lambda: cuda_kernels.order_topk_cuda(s, im, 2)):
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("k, block", [(0, 10), (True, 10), (2.0, 10), (2, 0)])
def test_bad_k_or_block(k, block):
    with pytest.raises(ValueError, match="k must|block must"):
        cuda_kernels.order_topk_cuda(torch.ones(3, 4), torch.ones(5, 4), k, block=block)


def test_cpu_tensors_without_interpreter_are_refused():
    assert cuda_kernels.available() == torch.cuda.is_available()
    with pytest.raises((RuntimeError, ValueError), match="CUDA") as error:
        cuda_kernels.order_error_matrix_cuda(torch.ones(3, 4), torch.ones(2, 4))
    assert "\n" not in str(error.value)


def test_package_works_without_triton():
    run = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["available"] is False
    assert "triton" in report["message"] and "\n" not in report["message"]


# ------------------------------------------------------------------ the CUDA dispatch, through the interpreter


@pytest.fixture(scope="module")
def dispatch(inputs: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """Run the CUDA branches of the measures, top-k, evaluation and index on CPU tensors through the interpreter.

    The device check is replaced by one that calls every tensor CUDA, and the path each error matrix took is recorded.
    """
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("dispatch")
    w = rng.standard_normal((37, 23)).astype(np.float32)
    w[rng.random(w.shape) < 0.4] = 0
    nan_s = inputs["s"].copy()
    nan_s[4, 9] = np.nan
    w[4, :5] = 0  # caption 4's NaN reaches only the images it has a non-zero weight for
    features = rng.standard_normal((300, 12)).astype(np.float32)
    queries = np.abs(rng.standard_normal((4, 16))).astype(np.float32)
    eval_im = inputs["grid_im"][:52]
    np.savez(folder / "inputs.npz", **inputs, w=w, grad_nan_s=nan_s, features=features, eval_im=eval_im,
             cap2img=np.arange(260) // 5)
    np.save(folder / "queries.npy", queries)
    env = child_env()
    run = subprocess.run([sys.executable, "-c", RUN_DISPATCH, str(folder / "inputs.npz"), str(folder / "out.npz"),
                          str(folder), str(folder / "queries.npy"), str(Path(__file__).parent)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = dict(np.load(folder / "out.npz"))
    out.update(w=w, grad_nan_s=nan_s, eval_im=eval_im)
    return out, json.loads(run.stdout.strip().splitlines()[-1])


def reference_grads(s: np.ndarray, im: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of sum_ab w[a, b] E[a, b] in float64, zero weights contributing nothing (NaN included)."""
    v = np.maximum(s.astype(np.float64)[:, None, :] - im.astype(np.float64)[None, :, :], 0)
    terms = np.where(w[:, :, None] != 0, w[:, :, None].astype(np.float64) * v, 0.0)
    return 2 * terms.sum(1), -2 * terms.sum(0)


def assert_close32(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(actual[ok], expected[ok], rtol=2e-5, atol=2e-6 * np.abs(expected[ok]).max(), err_msg=what)


def test_gradient_kernel_matches_float64(inputs, dispatch):
    out, _ = dispatch
    gs, gi = reference_grads(inputs["s"], inputs["im"], out["w"])
    assert_close32(out["grad_s"], gs, "grad_s")
    assert_close32(out["grad_im"], gi, "grad_im")
    # Weights given transposed (a strided view) give the same numbers.
    np.testing.assert_array_equal(out["grad_s_t"], out["grad_s"])
    np.testing.assert_array_equal(out["grad_im_t"], out["grad_im"])


def test_gradient_kernel_nan_only_where_weighted(inputs, dispatch):
    out, _ = dispatch
    gs, gi = reference_grads(out["grad_nan_s"], inputs["im"], out["w"])
    # The reference has NaN in caption 4's row and in the images weighted against it, nowhere else.
    assert np.isnan(gs[4]).any() and not np.isnan(np.delete(gs, 4, 0)).any()
    assert not np.isnan(gi[:5]).any() and np.isnan(gi[5:]).any()
    assert_close32(out["nan_grad_s"], gs, "grad_s")
    assert_close32(out["nan_grad_im"], gi, "grad_im")


def test_every_training_path_on_cuda_gives_the_float64_values_and_gradients(inputs, dispatch):
    out, paths = dispatch
    e = reference(inputs["s"], inputs["im"])
    gs, gi = reference_grads(inputs["s"], inputs["im"], out["w"])
    for path in ("triton", "chunked", "broadcast"):
        assert_close32(out[f"{path}_e"], e, path)
        assert_close32(out[f"{path}_gs"], gs, path)
        assert_close32(out[f"{path}_gi"], gi, path)
    # The chosen path ran (broadcasting is the measures' own code, so the dispatch is not called for it).
    assert paths["triton"] == ["triton"] and paths["chunked"] == ["chunked"] and paths["broadcast"] == []


def test_no_gradient_uses_the_triton_kernel_and_half_training_falls_back(inputs, dispatch):
    out, paths = dispatch
    assert paths["no_grad"] == ["triton"]
    assert_close32(out["nograd_e"], reference(inputs["s"], inputs["im"]), "no grad")
    # The gradient kernel takes float32 only: float16 training under the "triton" setting is chunked broadcasting.
    assert paths["float16_training"] == ["chunked"]
    s16, im16 = inputs["s"].astype(np.float16), inputs["im"].astype(np.float16)
    ref = reference(s16, im16)
    np.testing.assert_allclose(out["f16_grad_e"], ref, rtol=2e-3, atol=2e-3 * ref.max())


def test_device_topk_ties_nan_and_blocks(inputs, dispatch):
    out, _ = dispatch
    ref_err, ref_idx = reference_topk(inputs["grid_s"], inputs["grid_im"], 7)
    for name in ("tensor", "packed", "blocks"):
        np.testing.assert_array_equal(out[f"order_{name}_idx"], ref_idx, err_msg=name)
        np.testing.assert_array_equal(out[f"order_{name}_err"], ref_err, err_msg=name)
    cos = -(inputs["grid_s"].astype(np.float64) @ inputs["grid_im"].astype(np.float64).T)
    cos[np.isnan(cos)] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(cos.shape[1]), cos.shape), cos), axis=1)[:, :7]
    top = np.take_along_axis(cos, order, 1)
    assert (top[:, 1:] == top[:, :-1])[np.isfinite(top[:, 1:])].any()  # ties inside the top 7
    np.testing.assert_array_equal(out["cosine_idx"], order)
    np.testing.assert_array_equal(out["cosine_err"], np.take_along_axis(cos, order, 1))
    # Float16 images streamed in blocks (grid values are exact in float16): the same lists.
    np.testing.assert_array_equal(out["cosine16_idx"], order)
    np.testing.assert_array_equal(out["cosine16_err"], np.take_along_axis(cos, order, 1))


def test_evaluation_on_the_device_ranks_like_numpy(inputs, dispatch):
    out, _ = dispatch
    cap2img = np.arange(260) // 5
    e = reference(inputs["grid_s"], out["eval_im"])
    # Independent ranks: position in a stable sort of the float64 errors, NaN own error past everything.
    e_sorted = np.where(np.isnan(e), np.inf, e)
    t2i = np.array([np.argsort(e_sorted[a], kind="stable").tolist().index(cap2img[a]) for a in range(260)])
    t2i[np.isnan(e[np.arange(260), cap2img])] = e.shape[1]
    np.testing.assert_array_equal(out["eval_dev_t2i"], t2i)
    np.testing.assert_array_equal(out["eval_dev_t2i"], out["eval_cpu_t2i"])
    np.testing.assert_array_equal(out["eval_dev_i2t"], out["eval_cpu_i2t"])
    assert (t2i == 52).any()  # a NaN caption is in the data
    for direction in ("t2i", "i2t"):
        for key in ("ranks", "top"):
            np.testing.assert_array_equal(out[f"lists_dev_{direction}_{key}"], out[f"lists_cpu_{direction}_{key}"],
                                          err_msg=f"{direction} {key}")
        np.testing.assert_allclose(out[f"lists_dev_{direction}_errors"], out[f"lists_cpu_{direction}_errors"],
                                   rtol=1e-6, err_msg=direction)
    np.testing.assert_array_equal(out["lists_dev_t2i_ranks"], t2i)


def test_index_held_on_the_device_searches_like_the_cpu(dispatch):
    out, _ = dispatch
    assert bool(out["held_packed"]) and bool(out["held_small"])
    np.testing.assert_array_equal(out["index_dev_idx"], out["index_cpu_idx"])
    np.testing.assert_allclose(out["index_dev_err"], out["index_cpu_err"], rtol=1e-5, atol=1e-6)


def test_cpu_tensors_keep_the_cpu_paths(monkeypatch):
    from order_embedding import measures
    from order_embedding.kernels import gpu

    def refuse(*args):
        raise AssertionError("the CUDA path ran for CPU tensors")

    monkeypatch.setattr(gpu, "order_errors", refuse)
    s = torch.rand(5, 8, requires_grad=True)
    e = measures.order_errors(s, torch.rand(6, 8))
    e.sum().backward()
    assert e.shape == (5, 6) and s.grad is not None
    assert not gpu.on_cuda(s, np.ones(3), None)


def test_unknown_training_path_is_refused():
    from order_embedding.kernels import gpu

    with pytest.raises(ValueError, match="unknown CUDA training path 'fast'"):
        gpu.use_training_path("fast")


# ------------------------------------------------------------------ the prepared GPU check


GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_section_and_checks_its_results(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    run = subprocess.run([sys.executable, str(GPU_CHECK), str(tmp_path), "--tiny"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.log").read_text().startswith("gpu_check: ")
    m = results["matrix"]
    assert m["relative_error_vs_float64"] < 1e-5 and m["top10_rows_equal_float64"] == m["top10_rows_checked"]
    assert set(results["train"]["paths"]) == {"triton", "chunked", "broadcast"}
    assert all(r["passed"] for r in results["match"]["paths"].values())
    assert results["search"]["equal_to_full_scan"] and results["search"]["float64_rows_equal"] == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_check_without_a_gpu_stops_with_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(GPU_CHECK), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stdout.strip().count("\n") == 0 and "no CUDA device" in run.stdout and not run.stderr.strip()
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    run = subprocess.run([sys.executable, str(GPU_CHECK), "--tiny"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and run.stderr.strip() == "gpu_check: give an output folder or set OUT"
