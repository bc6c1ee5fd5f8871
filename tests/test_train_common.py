"""The shared training loop: schedule, overrides, atomic checkpoints, exact resume, a falling loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from tvad_chat.errors import CheckpointError, ConfigError
from tvad_chat.train import common
from tvad_chat.train.common import StopTraining, TrainConfig, Trainer


def test_schedule_warmup_peak_cosine_floor():
    total, peak, floor = 50, 1e-3, 1e-8
    lrs = [peak * common.lr_factor(s, total, 0.1, peak, floor) for s in range(total)]
    # 5 warmup steps rising linearly to the peak
    assert lrs[:5] == pytest.approx([peak * k / 5 for k in range(1, 6)])
    # then a monotone cosine decay that ends at the floor
    decay = lrs[5:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert peak * common.lr_factor(total, total, 0.1, peak, floor) == pytest.approx(floor, rel=1e-6)
    mid = 5 + 45 // 2
    expected = floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * (mid - 5) / 45))
    assert lrs[mid] == pytest.approx(expected)


def test_scheduler_drives_adamw_like_the_formula():
    p = torch.nn.Parameter(torch.zeros(2))
    cfg = TrainConfig(max_steps=20, lr=1e-2, min_lr=1e-8, warmup_ratio=0.1)
    opt = torch.optim.AdamW([p], lr=cfg.lr)
    sched = common.make_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.max_steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(cfg.lr / 2) and max(seen) == pytest.approx(cfg.lr)
    # the last step (19 of 20, after 2 warmup steps) is 17/18 of the way down the cosine
    assert seen[-1] == pytest.approx(cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * 17 / 18)))


@dataclass
class _Cfg(TrainConfig):
    taps: list[int] | None = None
    name: str = "x"
    pair: tuple[int, int] = (3, 3)


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = common.apply_overrides(_Cfg(), ["max_steps=7", "lr=3e-4", "cpu=true", "taps=1,8,16", "name=abc",
                                          "pair=2,4", "--warmup-ratio=0.2"])
    assert (cfg.max_steps, cfg.lr, cfg.cpu, cfg.taps, cfg.name, cfg.pair, cfg.warmup_ratio) == (
        7, 3e-4, True, [1, 8, 16], "abc", (2, 4), 0.2)
    assert common.apply_overrides(_Cfg(), ["taps=none"]).taps is None
    with pytest.raises(ConfigError, match="unknown setting"):
        common.apply_overrides(_Cfg(), ["max_stepz=3"])
    with pytest.raises(ConfigError, match="expected int"):
        common.apply_overrides(_Cfg(), ["max_steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        common.apply_overrides(_Cfg(), ["max_steps"])
    with pytest.raises(ConfigError):
        TrainConfig(warmup_ratio=1.5).validate()


def test_batches_are_a_pure_function_of_the_step_and_cover_each_epoch():
    n = 10
    seen = [common.batch_indices(n, s, m, 0, 1, 1, 5, seed=3) for s in range(2) for m in range(5)]
    flat = [i for b in seen for i in b]
    assert sorted(flat) == list(range(n))  # one epoch = every item once
    assert common.batch_indices(n, 1, 2, 0, 1, 1, 5, seed=3) == seen[7]
    # two processes never get the same item within an epoch
    r0 = [common.batch_indices(n, 0, m, 0, 2, 1, 5, seed=3)[0] for m in range(5)]
    r1 = [common.batch_indices(n, 0, m, 1, 2, 1, 5, seed=3)[0] for m in range(5)]
    assert sorted(r0 + r1) == list(range(n))


class _Net(torch.nn.Module):
    """A small model with dropout, so that a resume must restore the RNG to match."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                        torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x)


def _data(n: int = 24):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, :1] * 2 - x[:, 1:2]).detach()


def _trainer(tmp, steps=12, stop=None, **kw):
    torch.manual_seed(0)
    net = _Net()
    x, y = _data()
    cfg = TrainConfig(out_dir=str(tmp), max_steps=steps, batch_size=2, grad_accum=3, lr=5e-2, save_every=4,
                      progress=False, cpu=True, **kw)

    def batch_fn(step, micro, rank, world):
        return common.batch_indices(len(x), step, micro, rank, world, cfg.batch_size, cfg.grad_accum, cfg.seed)

    def loss_fn(idx):
        return torch.nn.functional.mse_loss(net(x[idx]), y[idx])

    callbacks = []
    if stop is not None:
        def crash(rec):
            if rec.step == stop:
                raise StopTraining

        callbacks.append(crash)
    return net, Trainer(cfg, {"net": net}, loss_fn, batch_fn, callbacks=callbacks, desc="t")


def test_interrupted_and_resumed_run_ends_identical(tmp_path):
    net_a, tr_a = _trainer(tmp_path / "a")
    tr_a.fit()
    # crash right after step 6: the last checkpoint is step 4, so steps 5-6 are redone after the resume
    net_b, tr_b = _trainer(tmp_path / "b", stop=6)
    tr_b.fit()
    assert tr_b.step == 6 and common.latest_checkpoint(tmp_path / "b").name == "ckpt-0000004"
    net_c, tr_c = _trainer(tmp_path / "b")
    tr_c.fit()
    assert tr_c.step == tr_a.step == 12
    assert [r.step for r in tr_c.history] == list(range(5, 13))
    for (k, a), (_, c) in zip(net_a.state_dict().items(), net_c.state_dict().items()):
        assert torch.equal(a, c), k
    # the optimizer state matches too (same moments, same step count)
    sa, sc = tr_a.optimizer.state_dict()["state"], tr_c.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sc[i]["exp_avg"]) for i in sa)
    assert tr_a.history[-1].loss == tr_c.history[-1].loss


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    p1 = common.save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, keep=2)
    common.save_checkpoint(tmp_path, 2, {"w": torch.ones(2) * 2}, keep=2)
    # a crash while writing step 3: a half-written temporary directory, latest still on step 2
    tmp = tmp_path / ".ckpt-0000003.999.tmp"
    tmp.mkdir()
    (tmp / "state.pt").write_bytes(b"\x00garbage")
    latest = common.latest_checkpoint(tmp_path)
    assert latest.name == "ckpt-0000002"
    assert torch.equal(common.load_state(latest)["w"], torch.ones(2) * 2)
    common.save_checkpoint(tmp_path, 3, {"w": torch.ones(2) * 3}, keep=2)
    assert not p1.exists() and sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-0000002", "ckpt-0000003"]
    # anything that needs arbitrary unpickling is refused
    bad = tmp_path / "evil"
    bad.mkdir()
    torch.save({"obj": _Net()}, bad / "state.pt")
    with pytest.raises(CheckpointError):
        common.load_state(bad)
    (tmp_path / "latest").write_text("ckpt-9999999\n")
    with pytest.raises(CheckpointError, match="delete"):
        common.latest_checkpoint(tmp_path)


def test_resume_refuses_changed_settings(tmp_path):
    _, tr = _trainer(tmp_path, steps=4)
    tr.fit()
    _, tr2 = _trainer(tmp_path, steps=8)
    with pytest.raises(CheckpointError, match="max_steps"):
        tr2.fit()


def test_stop_at_step_then_resume(tmp_path):
    _, tr = _trainer(tmp_path, steps=8, stop_at_step=3)
    tr.fit()
    assert tr.step == 3 and common.latest_checkpoint(tmp_path).name == "ckpt-0000003"
    _, tr2 = _trainer(tmp_path, steps=8)
    tr2.fit()
    assert tr2.step == 8 and tr2.history[0].step == 4


def test_lr_scales_give_each_module_its_own_learning_rate(tmp_path):
    torch.manual_seed(0)
    head, body = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=1, batch_size=8, grad_accum=1, lr=1e-3, warmup_ratio=0.0,
                      progress=False, cpu=True, save_every=100)
    before = {n: m.weight.detach().clone() for n, m in (("head", head), ("body", body))}
    trainer = Trainer(cfg, {"head": head, "body": body}, lambda _: (head(x) + body(x)).pow(2).mean(),
                      lambda *a: None, desc="t", lr_scales={"head": 10.0})
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([1e-2, 1e-3])
    trainer.fit()
    assert trainer.history[0].lr == pytest.approx(1e-3)  # the log shows the base rate, not a scaled group's
    # AdamW's first step moves every weight by about its group's learning rate
    assert float((head.weight.detach() - before["head"]).abs().mean()) == pytest.approx(1e-2, rel=0.05)
    assert float((body.weight.detach() - before["body"]).abs().mean()) == pytest.approx(1e-3, rel=0.05)
    with pytest.raises(ConfigError, match="lr_scales"):
        Trainer(cfg, {"head": head}, lambda _: head(x).sum(), lambda *a: None, lr_scales={"rae": 2.0})
