"""The fast SAE training paths compute the same losses and gradients as the plain definitions.

The oracles here are the textbook formulas written densely (float64 on CPU): TopK with dense codes and
``codes @ W_dec``, the AuxK loss over the dead latents only, and the CODEC step as ``s · 1[s ≥ τ]`` with a
detached mask. GPU-only checks (no host synchronisation in a step, fused Adam) are marked ``gpu``.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

from retina_codec.modes import BatchTopKSAE, CodecSAE, TopKSAE, TrainConfig, TrainStep, train_sae
from retina_codec.modes.codec_sae import gated_sigmoid
from retina_codec.modes.trainer import StepRunner, make_optimizer, set_lr

TORCH_THREADS = 1


def _topk_reference_loss(sae: TopKSAE, x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Dense TopK loss: MSE + aux_coef · AuxK over the dead latents (``dead (K,)`` bool)."""
    pre = (x - sae.b_dec) @ sae.W_enc.t() + sae.b_enc
    top, idx = pre.topk(sae.k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, idx, F.relu(top))
    recon = codes @ sae.W_dec + sae.b_dec
    loss = (recon - x).pow(2).mean()
    n_dead = int(dead.sum())
    if n_dead:
        aux_top, aux_idx = pre.masked_fill(~dead, float("-inf")).topk(min(sae.aux_k, n_dead), dim=1)
        aux_codes = torch.zeros_like(pre).scatter(1, aux_idx, F.relu(aux_top))
        err = (x - recon).detach()
        aux = (aux_codes @ sae.W_dec - err).pow(2).sum() / err.pow(2).sum()
        loss = loss + sae.aux_coef * aux
    return loss


def _loss_and_grads(sae: torch.nn.Module, loss: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in sae.named_parameters()}


@pytest.mark.parametrize(("sparse_encoder", "decoder"), [(True, "bag"), (False, "bag"), (False, "gemm"),
                                                         (True, "gemm")])
@pytest.mark.parametrize("n_dead", [0, 3, 30])  # none, fewer than aux_k (masked entries), more than aux_k
def test_topk_training_loss_and_gradients_equal_the_dense_definition(sparse_encoder, decoder, n_dead):
    torch.manual_seed(0)
    sae = TopKSAE(12, 40, k=3, aux_k=6, dead_after=1000, sparse_encoder=sparse_encoder,
                  decoder=decoder).double()
    with torch.no_grad():
        sae.b_dec.normal_()  # a non-zero b_dec: its gradient reaches it through encoder and decoder
        sae.b_enc.normal_(0.0, 0.1)
        sae.samples_since_fired[:n_dead] = 10**6
    x = torch.randn(64, 12, dtype=torch.float64)
    step = sae.training_loss(x, 0.5)
    assert isinstance(step, TrainStep)
    used_dead = torch.arange(40) < n_dead
    used_dead &= ~step.codes.ne(0).any(0)  # latents that fire in this batch are alive again
    assert int(used_dead.sum()) == (0 if n_dead == 0 else n_dead - int((~used_dead[:n_dead]).sum()))
    assert (float(step.parts["aux"]) > 0) == bool(used_dead.any())
    got_loss, got = _loss_and_grads(sae, step.loss)
    want_loss, want = _loss_and_grads(sae, _topk_reference_loss(sae, x, used_dead))
    if n_dead == 30:
        assert float(step.parts["aux"]) > 0
    else:
        assert float(step.parts["aux"]) == (0.0 if n_dead == 0 else float(step.parts["aux"]))
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_topk_encoder_and_decoder_backward_variants_agree_in_float32():
    x = torch.randn(16, 32)  # 64 activations of 96 latents: some dead ones stay dead
    grads = []
    for sparse, decoder in ((True, "bag"), (False, "gemm")):
        torch.manual_seed(3)
        sae = TopKSAE(32, 96, k=4, dead_after=300, sparse_encoder=sparse, decoder=decoder)
        with torch.no_grad():
            sae.samples_since_fired[::3] = 10**6  # a third of the latents dead: AuxK is on
        out = sae.training_loss(x, 0.0)
        assert float(out.parts["aux"]) > 0
        grads.append(_loss_and_grads(sae, out.loss))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for name in grads[0][1]:
        torch.testing.assert_close(grads[0][1][name], grads[1][1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_topk_codes_are_built_lazily_and_match_the_inference_codes():
    torch.manual_seed(1)
    sae = TopKSAE(10, 30, k=2)
    x = torch.randn(20, 10)
    step = sae.training_loss(x, 0.0)
    assert callable(step._codes)  # nothing dense was built by the step itself
    with torch.no_grad():
        torch.testing.assert_close(step.codes, sae.encode(x))
    loss, recon, codes, parts = step  # still unpacks like the former named tuple
    assert codes is step.codes and set(parts) == {"mse", "aux"}


def test_loading_a_state_with_old_dead_counters_turns_the_aux_loss_on():
    torch.manual_seed(2)
    donor = TopKSAE(8, 64, k=1, dead_after=1000)
    with torch.no_grad():
        donor.samples_since_fired.fill_(10**6)
    sae = TopKSAE(8, 64, k=1, dead_after=1000)
    x = torch.randn(16, 8)
    assert float(sae.training_loss(x, 0.0).parts["aux"]) == 0.0  # 16 samples seen: nothing can be dead
    sae.load_state_dict(donor.state_dict())
    assert float(sae.training_loss(x, 0.0).parts["aux"]) > 0.0


def test_batchtopk_dense_encoder_path_matches_the_sparse_one():
    x = torch.randn(64, 12)
    out = []
    for sparse in (True, False):
        torch.manual_seed(1)
        sae = BatchTopKSAE(12, 40, k=3, sparse_encoder=sparse, dead_after=10).double()
        sae.training_loss(x.double(), 0.0)
        step = sae.training_loss(x.double(), 0.0)
        out.append((_loss_and_grads(sae, step.loss), step.codes))
    assert out[0][0][0] == pytest.approx(out[1][0][0], rel=1e-12)
    torch.testing.assert_close(out[0][1], out[1][1])
    for name in out[0][0][1]:
        torch.testing.assert_close(out[0][0][1][name], out[1][0][1][name], rtol=1e-10, atol=1e-12, msg=name)


# ---------------------------------------------------------------------------------------- CODEC SAE
def test_gated_sigmoid_equals_sigmoid_times_detached_mask_and_its_gradient():
    torch.manual_seed(0)
    z = (torch.randn(50, 30, dtype=torch.float64) * 2).requires_grad_()
    g = torch.randn(50, 30, dtype=torch.float64)
    s = torch.sigmoid(z)
    ref = s * (s >= 0.8).to(s.dtype).detach()
    (ref_grad,) = torch.autograd.grad((ref * g).sum(), z)
    got = gated_sigmoid(z, 0.8)
    (got_grad,) = torch.autograd.grad((got * g).sum(), z)
    assert (ref > 0).any() and (ref == 0).any()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-14, atol=1e-15)
    on = got[got != 0]
    assert on.min() >= 0.8 and on.max() < 1.0


def test_codec_training_loss_and_gradients_equal_the_definition():
    torch.manual_seed(0)
    sae = CodecSAE(16, 48, hidden_size=32, l1=1e-2, init_active_fraction=0.2).double().train()
    x = torch.randn(40, 16, dtype=torch.float64)
    torch.manual_seed(7)  # the same dropout masks for both evaluations
    step = sae.training_loss(x, 0.3)
    got_loss, got = _loss_and_grads(sae, step.loss)
    torch.manual_seed(7)
    s = torch.sigmoid(sae.encoder(x))
    codes = s * (s >= sae.threshold).to(s.dtype)
    recon = codes @ sae.dictionary
    ref = (recon - x).pow(2).mean() + sae.l1 * sae.dictionary.abs().mean()
    want_loss, want = _loss_and_grads(sae, ref)
    assert (codes > 0).any()
    torch.testing.assert_close(step.codes, codes.detach(), rtol=0, atol=0)
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-13, msg=name)


class _BrokenCompileCodec(CodecSAE):
    """A CODEC SAE whose 'compiled' loss raises, as a failed torch.compile would at its first call."""

    def compile_training(self, enabled: bool = True) -> bool:
        def broken(x):
            raise RuntimeError("inductor failed")

        self._compiled = broken if enabled else None
        return enabled


def test_trainer_falls_back_to_eager_when_the_compiled_step_fails():
    torch.manual_seed(0)
    sae = _BrokenCompileCodec(8, 32, hidden_size=16)
    x = torch.randn(256, 8)
    cfg = TrainConfig(max_epochs=2, batch_size=64, device="cpu", quiet=True, compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_sae(sae, x, None, cfg)
    assert result.n_steps == 8 and all(torch.isfinite(torch.tensor(result.train_loss)))
    assert any("training eagerly" in str(w.message) for w in caught)
    assert sae._compiled is None  # compile is switched off after training


def test_optimizer_is_plain_adam_on_cpu():
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(3))], 1e-3, torch.device("cpu"))
    assert isinstance(opt, torch.optim.Adam) and not opt.defaults.get("fused")


# ------------------------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["topk", "codec"])
def test_gpu_training_step_never_synchronises_with_the_host(kind):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    sae = (TopKSAE(64, 256, k=8, dead_after=10) if kind == "topk" else CodecSAE(64, 256)).to(dev)
    opt = make_optimizer(list(sae.parameters()), 1e-3, dev)
    assert opt.defaults.get("fused")
    x = torch.randn(512, 64, device=dev)
    for _ in range(2):  # the first TopK step reads the dead counters once
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = sae.training_loss(x, 0.5)
        out.loss.float().backward()
        opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = sae.training_loss(x, 0.5)
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        opt.step()
        sae.after_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item()


def test_topk_begin_step_advances_the_dead_bound_once_per_step():
    sae = TopKSAE(8, 32, k=2, dead_after=100)
    x = torch.randn(30, 8)
    assert sae.begin_step(30) == ("aux", False)
    sae.training_loss(x, 0.0)  # consumes the prepared step: no second advance
    sae.training_loss(x, 0.0)  # not prepared: advances itself
    assert sae._seen_bound == 60
    sae.begin_step(30)
    sae.step_replayed()  # a replayed step: the next call prepares again
    assert sae.begin_step(30) == ("aux", True)  # 120 >= 100: AuxK from now on
    assert BatchTopKSAE(8, 32, k=2).begin_step(30) is None  # data-dependent sizes: never captured


def test_step_runner_eager_step_equals_a_hand_written_step():
    x = torch.randn(64, 12)
    params = []
    for use_runner in (True, False):
        torch.manual_seed(0)
        sae = TopKSAE(12, 40, k=3)
        opt = make_optimizer(list(sae.parameters()), 1e-2, torch.device("cpu"))
        for _ in range(3):
            if use_runner:
                StepRunner(sae, opt, None, torch.device("cpu"))(x, 0.0)
            else:
                out = sae.training_loss(x, 0.0)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                sae.after_step()
        params.append([p.detach().clone() for p in sae.parameters()])
    for a, b in zip(*params, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["topk", "codec"])
def test_gpu_graph_replayed_steps_train_like_eager_steps(kind):
    dev = torch.device("cuda")
    x = torch.randn(8, 512, 64, device=dev)
    params = []
    for graph in (True, False):
        torch.manual_seed(0)
        with dev:
            sae = TopKSAE(64, 256, k=8, dead_after=1000) if kind == "topk" else CodecSAE(64, 256, dropout=0.0)
        opt = make_optimizer(list(sae.parameters()), 1e-3, dev, capturable=True)
        runner = StepRunner(sae, opt, None, dev, cuda_graph=graph, warmup=2)
        for i in range(8):  # crosses dead_after for TopK: a second graph with AuxK
            set_lr(opt, 1e-3 * (1 + i))
            runner(x[i], 0.0)
        assert runner.n_replays == (4 if graph and kind == "topk" else 5 if graph else 0)
        params.append([p.detach().clone() for p in sae.parameters()])
    for a, b in zip(*params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@gpu
def test_gpu_compiled_codec_step_has_the_eager_gradients():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    with dev:
        sae = CodecSAE(64, 256, dropout=0.0, init_active_fraction=0.2)
    x = torch.randn(512, 64, device=dev)
    grads = []
    for compiled in (False, True):
        sae.compile_training(compiled)
        grads.append(_loss_and_grads(sae, sae.training_loss(x, 0.0).loss))
    sae.compile_training(False)
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-4)
    for name in grads[0][1]:
        assert grads[1][1][name].abs().max() > 0, name
        torch.testing.assert_close(grads[1][1][name], grads[0][1][name], rtol=1e-3, atol=1e-6, msg=name)
