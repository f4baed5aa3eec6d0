"""train/engine.py: the gradient engine on one process, and make_engine's choice.

What a user relies on: one process always trains with the plain engine (whatever ``run.distributed`` says), and
its backward / clip / step / discard give exactly what plain torch gives; autocast is bf16 only when
``run.mixed_precision=bf16``; the backbone's denoiser is routed through the engine's wrapper only for the
duration; an unknown engine on several processes is refused naming the setting.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from shiftvdm.errors import TrainingError
from shiftvdm.train.distributed import Distributed
from shiftvdm.train.engine import ENGINES, GradientEngine, _Routed, make_engine


def module_and_data(seed: int = 0):
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = torch.randn(5, 4), torch.randn(5, 2)
    return module, x, y


@pytest.mark.parametrize("kind", [*ENGINES, "nonsense"])
def test_one_process_gets_the_plain_engine_whatever_the_kind(kind):
    module, _, _ = module_and_data()
    engine = make_engine(module, Distributed(), kind)
    assert type(engine) is GradientEngine and engine.kind == "none"
    assert engine.wrapper is module and engine.per_parameter_gradients
    assert engine.state_dict() is None  # nothing added to a checkpoint


def test_an_unknown_engine_on_several_processes_is_refused_naming_the_setting():
    module, _, _ = module_and_data()
    dist = SimpleNamespace(rank=0, world=2, device=torch.device("cpu"))
    with pytest.raises(TrainingError, match=r"run.distributed='zero3': expected ddp, fsdp2 or deepspeed"):
        make_engine(module, dist, "zero3")


def test_backward_clip_step_and_discard_match_plain_torch():
    ref, x, y = module_and_data()
    ours, _, _ = module_and_data()
    engine = make_engine(ours, Distributed())
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=0.1)
    opt = torch.optim.AdamW(ours.parameters(), lr=0.1)
    params = list(ours.parameters())

    for _ in range(2):
        # two terms accumulated, as a step's SFT and rollout backwards are
        for scale in (1.0, 0.5):
            with engine.term(sync=scale == 0.5):
                with engine.autocast():
                    loss = scale * ((ours(x) - y) ** 2).mean()
                engine.backward(loss)
            (scale * ((ref(x) - y) ** 2).mean()).backward()
        norm = engine.clip_grad_norm_(params, 0.05)
        norm_ref = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.05)
        assert norm.item() == norm_ref.item() and norm.item() > 0.05  # the norm before clipping; it did clip
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(params, ref.parameters()))
        total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
        assert total.item() == pytest.approx(0.05, rel=1e-5)  # clipped in place
        engine.step(opt)
        opt_ref.step()
        opt.zero_grad()
        opt_ref.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(params, ref.parameters()))

    # a skipped step: the gradients are dropped and the weights do not move
    before = [p.detach().clone() for p in params]
    engine.backward(((ours(x) - y) ** 2).mean())
    engine.discard_gradients(opt)
    assert all(p.grad is None for p in params)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))


@pytest.mark.parametrize("precision, dtype", [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_is_bf16_only_with_mixed_precision_bf16(precision, dtype):
    module, x, _ = module_and_data()
    engine = make_engine(module, Distributed(), mixed_precision=precision)
    with engine.autocast():
        out = module(x)
    assert out.dtype == dtype
    assert module(x).dtype == torch.float32  # only inside


def test_routed_swaps_the_owners_attribute_for_the_duration_and_restores_it():
    module, x, _ = module_and_data()
    module.tag = "the denoiser"
    calls = []

    class Wrapper(nn.Module):  # stands for DDP's wrapper: calls go through it (its hooks run)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            calls.append(len(args))
            return self.inner(*args)

    engine = GradientEngine(module, Distributed())
    owner = SimpleNamespace(denoiser=module, decoder="other")
    with engine.routed(owner):  # the plain engine: nothing to route
        assert owner.denoiser is module
    engine.wrapper = Wrapper(module)
    with engine.routed(owner):
        assert isinstance(owner.denoiser, _Routed)
        assert torch.equal(owner.denoiser(x), module(x)) and calls == [1]  # called through the wrapper
        assert owner.denoiser.tag == "the denoiser"  # attributes come from the module
    assert owner.denoiser is module and owner.decoder == "other"

    with pytest.raises(RuntimeError, match="boom"):
        with engine.routed(owner, "decoder"):
            assert isinstance(owner.decoder, _Routed)
            raise RuntimeError("boom")
    assert owner.decoder is module  # restored on error too (to the module the engine wraps)
